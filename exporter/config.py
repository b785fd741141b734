"""Configuration: YAML validated by pydantic models that forbid unknown keys.

Errors name the file, the path inside it (with the YAML line where known) and the offending
value, and the CLI exits 2 on them. Defaults are the thresholds of the source runbooks
(shared/runbooks/README.md); every threshold can be overridden per target, queue and endpoint.
"""

from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from exporter import configyaml, queryconfig, sources
from exporter.backups.config import Backup
from exporter.configtypes import (
    IDENT_RE,
    MIN_COLLECT_INTERVAL,
    MIN_PG_TIMEOUT,
    Duration,
    FieldError,
    LabelValue,
    Model,
    Ratio,
    StatusList,
    at_least,
    at_most,
    ordered_pair,
    require_unique,
)
from exporter.poolers.config import Pooler
from exporter.probes.config import TLS, App
from exporter.queryconfig import CustomQuery
from exporter.retentionconfig import RetentionTable, check_unique
from exporter.secrets import looks_secret, redact, register_secret, scrub_urls
from exporter.sources import CollectorSettings

# --- collectors -------------------------------------------------------------------------


@functools.cache
def collectors_model() -> type[Model]:
    """The `collectors:` section: one key per registered collector (exporter/sources.py),
    its settings model the value, its defaults the default."""
    fields: dict[str, Any] = {c.name: (c.Settings, c.Settings()) for c in sources.collectors()}
    return create_model("Collectors", __base__=Model, **fields)


class Collectors:
    """The type of `Target.collectors`: the model above, made when pydantic first builds the
    schema (Target and Config defer it) rather than at import. Finding the collectors
    imports their modules and the database driver, which what only reads this module (the
    web config, the HTTP server) must not load."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return handler(collectors_model())


# built on first validation, when the schema of `collectors` is asked for
DEFERRED = ConfigDict(**Model.model_config, defer_build=True)


# --- queues -----------------------------------------------------------------------------

ROLES = ("pending", "processing", "completed", "failed", "dead")


class QueueStatuses(Model):
    """Which values of the status column play which role (runbook 000 uses the defaults)."""

    pending: StatusList = ["pending"]
    processing: StatusList = ["processing"]
    completed: StatusList = ["completed"]
    failed: StatusList = ["failed"]
    dead: StatusList = []  # a status for dead-lettered jobs, if the queue has one

    @model_validator(mode="after")
    def _disjoint(self) -> QueueStatuses:
        seen: dict[str, str] = {}
        for role in ROLES:
            for value in getattr(self, role):
                if value in seen:
                    raise ValueError(
                        f"status value {value!r} is given both for {seen[value]} and {role}"
                    )
                seen[value] = role
        if not self.pending:
            raise ValueError("at least one pending status value is needed")
        return self

    def role_of(self) -> dict[str, str]:
        return {v: role for role in ROLES for v in getattr(self, role)}


class QueueThresholds(Model):
    depth_warning: int = Field(50, ge=0)  # runbook 000: > 50 jobs
    depth_critical: int = Field(200, ge=0)  # runbook 000: > 200 jobs
    stuck_warning: int = Field(0, ge=0)  # runbook 000: any stuck job
    retries_exhausted_warning: int = Field(0, ge=0)  # runbook 000: jobs at 3 need a person
    dead_letter_warning: int = Field(0, ge=0)  # runbook 003: clear the DLQ daily
    oldest_pending_warning: Duration = 900.0  # ours: a job waiting 15 min is a backlog
    oldest_pending_critical: Duration = 3600.0
    failure_ratio_warning: Ratio = 0.03  # runbook 000: error rate > 3 %
    failure_ratio_critical: Ratio = 0.10  # runbook 000: error rate > 10 %

    @model_validator(mode="after")
    def _ordered(self) -> QueueThresholds:
        ordered_pair(self, "depth_warning", "depth_critical")
        ordered_pair(self, "oldest_pending_warning", "oldest_pending_critical")
        ordered_pair(self, "failure_ratio_warning", "failure_ratio_critical")
        return self


class Queue(Model):
    """A hand-rolled jobs table (exporter/queuekinds/table.py)."""

    kind: ClassVar[str] = "table"  # the key that makes a `queues:` item this kind
    name: LabelValue | None = None  # the `queue` label; defaults to the table name
    table: str  # schema-qualified, e.g. public.processing_jobs (public. is assumed)
    status_column: str = "status"
    statuses: QueueStatuses = QueueStatuses()
    created_at_column: str = "created_at"
    updated_at_column: str = "updated_at"
    retry_count_column: str | None = "retry_count"
    max_retries: int = Field(3, ge=0)
    stuck_after: Duration = 1800.0  # runbook 000: processing, updated_at older than 30 min
    dead_letter_table: str | None = None  # a separate DLQ table (runbook 003)
    recent_window: Duration = 300.0  # window for jobs finished / failed recently
    # completed rows grow to millions: estimate them from planner statistics by default
    count_terminal: Literal["estimate", "exact", "off"] = "estimate"
    # failed jobs pile up while nobody clears them: counted exactly up to this many (by status
    # and retries left), planner estimates beyond (exporter/queuekinds/table.py)
    exact_count_limit: int = Field(1000, ge=1, le=1_000_000)
    thresholds: QueueThresholds = QueueThresholds()
    # where this queue sits in the config file, e.g. targets[0].queues[1]; set by Config so
    # collector and doctor errors can name the path the user has to edit
    _path: str = PrivateAttr("")

    @field_validator("table", "dead_letter_table")
    @classmethod
    def _qualified(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = v.split(".")
        if len(parts) > 2 or not all(parts) or not all(IDENT_RE.match(p) for p in parts):
            raise ValueError(f"invalid table name {v!r}: use table or schema.table")
        return v if len(parts) == 2 else f"public.{v}"

    @model_validator(mode="after")
    def _exact_below_limit(self) -> Queue:
        # QueueRetriesExhausted compares the count with this threshold: exact up to the
        # limit, the comparison is exact; beyond it the count is an estimate of at least the
        # limit, which is above the threshold either way
        if self.thresholds.retries_exhausted_warning >= self.exact_count_limit:
            raise FieldError(
                ("exact_count_limit",),
                f"exact_count_limit ({self.exact_count_limit}) must be above"
                " thresholds.retries_exhausted_warning"
                f" ({self.thresholds.retries_exhausted_warning}): the alert compares exact"
                " counts",
            )
        return self

    @property
    def label(self) -> str:
        return self.name or self.table.split(".", 1)[1]

    @property
    def schema_table(self) -> tuple[str, str]:
        schema, table = self.table.split(".", 1)
        return schema, table

    def describe(self) -> str:
        return f"table {self.table}"


# pgmq.format_table_name refuses these in a queue name, and pgmq.validate_queue_name anything
# longer than 47 characters (the q_/a_ tables and pg_partman's template names must fit in 63)
_PGMQ_FORBIDDEN = ("$", ";", "--", "'")
PGMQ_NAME_MAX = 47
ALL_QUEUES = "*"


def _pgmq_name(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError('give a pgmq queue name (or "*" for every queue in pgmq.meta)')
    if v == ALL_QUEUES:
        return v
    if len(v) > PGMQ_NAME_MAX or any(bad in v for bad in _PGMQ_FORBIDDEN):
        raise ValueError(
            f"invalid pgmq queue name {v!r}: at most {PGMQ_NAME_MAX} characters, without "
            "$ ; -- or '"
        )
    return v


PgmqName = Annotated[str, PlainValidator(_pgmq_name)]


class PgmqQueue(Model):
    """A pgmq queue, or every queue in pgmq.meta not configured by name (`pgmq: "*"`);
    exporter/queuekinds/pgmq.py maps its messages to the queue roles (docs/queues.md)."""

    kind: ClassVar[str] = "pgmq"
    pgmq: PgmqName  # the queue name as in pgmq.meta, or "*"
    name: LabelValue | None = None  # the `queue` label; defaults to the queue name
    # read_ct > max_reads = retries exhausted (runbook 000 retries a job 3 times)
    max_reads: int = Field(3, ge=0)
    dead_letter_queue: PgmqName | None = None  # a pgmq queue whose messages are dead letters
    stuck_after: Duration = 1800.0  # runbook 000: processing for more than 30 min
    recent_window: Duration = 300.0
    # how the app finishes a message: pgmq.archive (throughput from the archive table) or
    # pgmq.delete / pgmq.pop (throughput from the queue table's delete counter)
    completed_by: Literal["archive", "delete"] = "archive"
    max_queues: int = Field(50, ge=1, le=10000)  # `pgmq: "*"` only: at most this many queues
    thresholds: QueueThresholds = QueueThresholds()
    _path: str = PrivateAttr("")

    @model_validator(mode="after")
    def _check(self) -> PgmqQueue:
        if self.pgmq == ALL_QUEUES:
            for key in ("name", "dead_letter_queue"):
                if getattr(self, key) is not None:
                    raise FieldError(
                        (key,),
                        f"{key} is for one queue: configure that queue by name, "
                        'not under pgmq: "*"',
                    )
        elif "max_queues" in self.model_fields_set:
            raise FieldError(("max_queues",), 'max_queues only applies to pgmq: "*"')
        if self.dead_letter_queue == ALL_QUEUES:
            raise FieldError(("dead_letter_queue",), "the dead-letter queue is one queue, not *")
        if self.dead_letter_queue is not None and self.dead_letter_queue == self.pgmq:
            raise FieldError(("dead_letter_queue",), "a queue cannot be its own dead-letter queue")
        return self

    @property
    def wildcard(self) -> bool:
        return self.pgmq == ALL_QUEUES

    @property
    def label(self) -> str | None:
        """The `queue` label; None for `pgmq: "*"`, whose queues are labelled by their names."""
        return None if self.wildcard else (self.name or self.pgmq)

    @property
    def max_retries(self) -> int:
        """For the shared `runbook_queue_max_retries` series (QueueRetriesExhausted's text)."""
        return self.max_reads

    def describe(self) -> str:
        if self.wildcard:
            return f"every pgmq queue in pgmq.meta (at most {self.max_queues})"
        return f"pgmq queue {self.pgmq}"


# --- library presets (exporter/queuekinds/library.py) ---------------------------------

LIBRARY_QUEUE_NAME_MAX = 255


def _library_queue_name(v: Any) -> str:
    if not isinstance(v, str) or not v or len(v) > LIBRARY_QUEUE_NAME_MAX or "\x00" in v:
        raise ValueError(
            f"give one of the library's queue names (at most {LIBRARY_QUEUE_NAME_MAX} "
            'characters), or "*" for every queue it has'
        )
    return v


LibraryQueueName = Annotated[str, PlainValidator(_library_queue_name)]


class LibraryQueue(Model):
    """A queue of a job library (pg-boss, Oban...) read through the library's own schema, or
    every queue it has (`"*"`). Each library is a subclass whose key field is named after it
    (`pg_boss: default`); exporter/queuekinds/<library>.py reads it (docs/queues.md)."""

    kind: ClassVar[str]  # the config key, also the key field's name
    library: ClassVar[str]  # how the library calls itself, for messages: "pg-boss"
    default_schema: ClassVar[str]  # where the library installs its tables by default

    name: LabelValue | None = None  # the `queue` label; defaults to the library's queue name
    schema_: str | None = Field(None, alias="schema")  # the library's schema; None: its default
    # added to the library's own notion of a stuck job (its expiry, heartbeat or attempt time)
    stuck_after: Duration = 300.0
    recent_window: Duration = 300.0
    max_queues: int = Field(50, ge=1, le=10000)  # "*" only: at most this many queues
    thresholds: QueueThresholds = QueueThresholds()
    _path: str = PrivateAttr("")

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: str | None) -> str | None:
        if v is not None and (not IDENT_RE.match(v) or "." in v):
            raise ValueError(f"invalid schema name {v!r}: one identifier, without a dot")
        return v

    @model_validator(mode="after")
    def _check(self) -> LibraryQueue:
        if self.wildcard:
            if self.name is not None:
                raise FieldError(
                    ("name",),
                    "name is for one queue: configure that queue by name, not under "
                    f'{self.kind}: "*"',
                )
        elif "max_queues" in self.model_fields_set:
            raise FieldError(("max_queues",), f'max_queues only applies to {self.kind}: "*"')
        return self

    @property
    def queue(self) -> str:
        """The library's queue name, or "*"."""
        return getattr(self, self.kind)

    @property
    def schema_name(self) -> str:
        return self.schema_ or self.default_schema

    @property
    def wildcard(self) -> bool:
        return self.queue == ALL_QUEUES

    @property
    def label(self) -> str | None:
        """The `queue` label; None for "*", whose queues are labelled by their names."""
        return None if self.wildcard else (self.name or self.queue)

    @property
    def max_retries(self) -> None:
        """No `runbook_queue_max_retries` series: the library keeps a retry limit per job."""
        return None

    def describe(self) -> str:
        if self.wildcard:
            return (
                f"every {self.library} queue in schema {self.schema_name} "
                f"(at most {self.max_queues})"
            )
        return f"{self.library} queue {self.queue} (schema {self.schema_name})"


class PgBossQueue(LibraryQueue):
    kind: ClassVar[str] = "pg_boss"
    library: ClassVar[str] = "pg-boss"
    default_schema: ClassVar[str] = "pgboss"
    pg_boss: LibraryQueueName


class ProcrastinateQueue(LibraryQueue):
    kind: ClassVar[str] = "procrastinate"
    library: ClassVar[str] = "Procrastinate"
    default_schema: ClassVar[str] = "public"
    procrastinate: LibraryQueueName


class RiverQueue(LibraryQueue):
    kind: ClassVar[str] = "river"
    library: ClassVar[str] = "River"
    default_schema: ClassVar[str] = "public"
    river: LibraryQueueName
    # River's RescueStuckJobsAfter: a job running longer is rescued (retried or discarded)
    rescue_after: Duration = 3600.0

    def describe(self) -> str:
        horizon = f"rescue_after {self.rescue_after:g}s + stuck_after"
        return f"{super().describe()}; stuck: running past {horizon}"


class ObanQueue(LibraryQueue):
    kind: ClassVar[str] = "oban"
    library: ClassVar[str] = "Oban"
    default_schema: ClassVar[str] = "public"
    oban: LibraryQueueName
    # Oban's Lifeline plugin rescue_after: an executing job older than this is an orphan
    rescue_after: Duration = 3600.0

    def describe(self) -> str:
        horizon = f"rescue_after {self.rescue_after:g}s + stuck_after"
        return f"{super().describe()}; stuck: executing past {horizon}"

    @model_validator(mode="before")
    @classmethod
    def _prefix(cls, data: Any) -> Any:
        """`prefix:` is Oban's name for the schema: accepted as `schema:`."""
        if isinstance(data, dict) and "prefix" in data:
            if "schema" in data:
                raise ValueError("give schema or prefix (Oban's name for it), not both")
            data = {**data, "schema": data["prefix"]}
            del data["prefix"]
        return data


class SolidQueueQueue(LibraryQueue):
    kind: ClassVar[str] = "solid_queue"
    library: ClassVar[str] = "Solid Queue"
    default_schema: ClassVar[str] = "public"
    solid_queue: LibraryQueueName
    # SolidQueue.process_alive_threshold: a worker silent for longer is pruned as dead
    process_alive_threshold: Duration = 300.0

    def describe(self) -> str:
        return (
            f"{super().describe()}; stuck: claimed by a worker silent for "
            f"process_alive_threshold {self.process_alive_threshold:g}s + stuck_after"
        )


class GoodJobQueue(LibraryQueue):
    kind: ClassVar[str] = "good_job"
    library: ClassVar[str] = "GoodJob"
    default_schema: ClassVar[str] = "public"
    good_job: LibraryQueueName

    def describe(self) -> str:
        return f"{super().describe()}; stuck: performed by a process silent for 300s + stuck_after"


class GraphileWorkerQueue(LibraryQueue):
    """A graphile-worker task identifier (exporter/queuekinds/graphile_worker.py)."""

    kind: ClassVar[str] = "graphile_worker"
    library: ClassVar[str] = "graphile-worker"
    default_schema: ClassVar[str] = "graphile_worker"
    graphile_worker: LibraryQueueName

    def describe(self) -> str:
        if self.wildcard:
            return (
                f"every graphile-worker task with jobs in {self.schema_name}.jobs "
                f"(at most {self.max_queues})"
            )
        return f"graphile-worker task {self.queue} (view {self.schema_name}.jobs)"


PGQUEUER_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class PgqueuerQueue(LibraryQueue):
    """A pgqueuer entrypoint (exporter/queuekinds/pgqueuer.py)."""

    kind: ClassVar[str] = "pgqueuer"
    library: ClassVar[str] = "pgqueuer"
    default_schema: ClassVar[str] = "public"
    pgqueuer: LibraryQueueName
    # pgqueuer's PGQUEUER_PREFIX: prepended to its table names (billing_pgqueuer...)
    prefix: str = ""

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and not PGQUEUER_PREFIX_RE.match(v):
            raise ValueError(
                "invalid pgqueuer prefix: lowercase letters, digits and _ (what "
                "PGQUEUER_PREFIX was when pgqueuer installed its tables)"
            )
        return v

    def describe(self) -> str:
        table = f"{self.schema_name}.{self.prefix}pgqueuer"
        if self.wildcard:
            return f"every pgqueuer entrypoint of {table} (at most {self.max_queues})"
        return f"pgqueuer entrypoint {self.queue} ({table})"


# the library presets, by config key; presets-b and presets-c add theirs here
LIBRARY_QUEUES: dict[str, type[LibraryQueue]] = {
    m.kind: m
    for m in (
        PgBossQueue,
        GraphileWorkerQueue,
        RiverQueue,
        ObanQueue,
        ProcrastinateQueue,
        PgqueuerQueue,
        SolidQueueQueue,
        GoodJobQueue,
    )
}

# the kinds of `queues:` item, by the key that selects one; each has its module in
# exporter/queuekinds/ under the same key
QUEUE_KINDS: dict[str, type[Queue] | type[PgmqQueue] | type[LibraryQueue]] = {
    "table": Queue,
    "pgmq": PgmqQueue,
    **LIBRARY_QUEUES,
}
AnyQueue = Queue | PgmqQueue | LibraryQueue


def _queue_item(v: Any) -> Any:
    """Pick a queue item's model by its key; errors keep the item's own path
    (targets[0].queues[1].stuck_after), not a union branch's."""
    if isinstance(v, tuple(QUEUE_KINDS.values())):
        return v
    keys = [k for k in QUEUE_KINDS if isinstance(v, dict) and k in v]
    names = " or ".join(f"{k}:" for k in QUEUE_KINDS)
    if not keys:
        raise ValueError(f"a queue needs one of the keys {names}")
    if len(keys) > 1:
        raise ValueError(f"a queue has one of the keys {names}, not several")
    return QUEUE_KINDS[keys[0]].model_validate(v)


QueueItem = Annotated[AnyQueue, PlainValidator(_queue_item)]


# --- PostgreSQL -------------------------------------------------------------------------


class PgThresholds(Model):
    connections_warning_ratio: Ratio = 0.8  # of max_connections - reserved
    connections_critical_ratio: Ratio = 0.9
    long_query_warning: Duration = 300.0  # runbook 002: > 5 min
    long_query_critical: Duration = 600.0  # runbook 002: > 10 min, terminate
    idle_in_transaction_warning: Duration = 300.0  # ours: holds locks and snapshots
    idle_in_transaction_critical: Duration = 1800.0
    lock_wait_warning: Duration = 60.0  # ours: short lock waits are normal, a minute is not
    dead_tuple_ratio_warning: Ratio = 0.2  # runbook 002: weekly dead-tuple check
    dead_tuple_min_rows: int = Field(10000, ge=0)  # ignore tiny tables
    slow_statement_mean: Duration = 1.0  # runbooks 001/002: mean > 1 s
    rollback_ratio_warning: Ratio = 0.001  # runbook 004: DB errors > 0.1 %
    rollback_ratio_critical: Ratio = 0.01  # runbook 004: > 1 %

    @model_validator(mode="after")
    def _ordered(self) -> PgThresholds:
        ordered_pair(self, "connections_warning_ratio", "connections_critical_ratio")
        ordered_pair(self, "long_query_warning", "long_query_critical")
        ordered_pair(self, "idle_in_transaction_warning", "idle_in_transaction_critical")
        ordered_pair(self, "rollback_ratio_warning", "rollback_ratio_critical")
        return self


def parse_dsn(raw: str) -> dict[str, str]:
    """libpq's reading of a DSN, with every port checked; ValueError never echoes the DSN
    (it holds the password when there is one)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(raw)
    except Exception as e:
        # libpq quotes pieces of the DSN in its message: keep what it says, drop what it quotes
        said = re.sub(r'"[^"]*"', "…", str(e).strip().splitlines()[0] if str(e).strip() else "")
        raise ValueError(
            f"the DSN cannot be parsed ({said})" if said else "the DSN cannot be parsed"
        ) from None
    for port in str(params.get("port", "")).split(","):
        if port.strip() and not (port.strip().isdigit() and 1 <= int(port) <= 65535):
            raise ValueError("the DSN's port must be a number from 1 to 65535")
    return {k: str(v) for k, v in params.items()}


# the target-level defaults; a shorter interval shortens its timeouts (see Target._timeouts)
DEFAULT_COLLECT_TIMEOUT = 10.0
DEFAULT_STATEMENT_TIMEOUT = 5.0
DEFAULT_LOCK_TIMEOUT = 1.0
DEFAULT_CONNECT_TIMEOUT = 5.0


class Target(Model):
    model_config = DEFERRED

    name: LabelValue
    dsn: str | None = None  # libpq URI or key=value; keep the password out of it
    dsn_env: str | None = None  # environment variable that holds the whole DSN
    password_env: str | None = None
    password_file: Path | None = None
    collect_interval: Duration = 15.0
    # the timeouts left unset follow the interval down (see _timeouts); set ones are checked
    collect_timeout: Duration = DEFAULT_COLLECT_TIMEOUT
    statement_timeout: Duration = DEFAULT_STATEMENT_TIMEOUT
    lock_timeout: Duration = DEFAULT_LOCK_TIMEOUT
    connect_timeout: Duration = DEFAULT_CONNECT_TIMEOUT
    # what sits between the exporter and PostgreSQL (docs/postgres.md, "Poolers"): in
    # `transaction` mode the session is set up with no session state (exporter/db.py)
    pooler: Literal["none", "session", "transaction"] = "none"
    # sessions the exporter may hold on the target at once (exporter/db.py): opened only when
    # every open one is busy, so a slow statement of one collector never holds up another
    max_sessions: int = Field(3, ge=1, le=20)
    collectors: Collectors = Field(default_factory=lambda: collectors_model()())
    queues: list[QueueItem] = []
    thresholds: PgThresholds = PgThresholds()
    retention: list[RetentionTable] = []  # exporter/retentionconfig.py
    queries: list[CustomQuery] = []  # custom SQL metrics: exporter/queryconfig.py

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        if v is not None and (password := parse_dsn(v).get("password")):
            register_secret(password)  # redacted from every later message and log line
        return v

    @model_validator(mode="after")
    def _check(self) -> Target:
        if (self.dsn is None) == (self.dsn_env is None):
            raise ValueError("give exactly one of dsn or dsn_env")
        if self.password_env and self.password_file:
            raise ValueError("give at most one of password_env or password_file")
        labels = [q.label for q in self.queues if q.label is not None]
        require_unique(labels, "queue names must be unique within a target")
        wildcards = [q for q in self.queues if isinstance(q, PgmqQueue) and q.wildcard]
        if len(wildcards) > 1:
            raise ValueError('give pgmq: "*" at most once per target')
        with FieldError.at("retention"):
            check_unique(self.retention)
        presets = [
            (q.kind, q.schema_name)
            for q in self.queues
            if isinstance(q, LibraryQueue) and q.wildcard
        ]
        for kind, schema in sorted(set(presets)):
            if presets.count((kind, schema)) > 1:
                raise ValueError(f'give {kind}: "*" at most once per target and schema ({schema})')
        self._timeouts()
        queryconfig.check_target(self)
        return self

    def _derive(self, field: str, value: float) -> None:
        """Fill in a timeout the file left unset (the model is frozen once validated)."""
        if field not in self.model_fields_set:
            object.__setattr__(self, field, value)

    def _timeouts(self) -> None:
        """Intervals and timeouts that work at runtime: every interval at least
        MIN_COLLECT_INTERVAL, every timeout within its interval, the session's statement and
        connect timeouts within the shortest collector timeout, lock_timeout within
        statement_timeout, nothing PostgreSQL would round to 0 (= no timeout). An unset
        timeout is shortened to fit instead, as Prometheus does with scrape_timeout."""
        why = "each run queries the database"
        with FieldError.at("collect_interval"):
            at_least("collect_interval", self.collect_interval, MIN_COLLECT_INTERVAL, why)
        self._derive("collect_timeout", min(DEFAULT_COLLECT_TIMEOUT, self.collect_interval))
        with FieldError.at("collect_timeout"):
            at_least("collect_timeout", self.collect_timeout, MIN_PG_TIMEOUT, "0 never finishes")
            at_most(
                "collect_timeout", self.collect_timeout, "collect_interval", self.collect_interval
            )
        shortest = ("collect_timeout", self.collect_timeout)
        for name, settings in self.enabled_collectors():
            interval, timeout = self.interval_of(settings), self.timeout_of(settings)
            where = f"collectors.{name}"
            with FieldError.at("collectors", name, "interval"):
                at_least(f"{where}.interval", interval, MIN_COLLECT_INTERVAL, why)
            with FieldError.at("collectors", name, "timeout"):
                at_least(f"{where}.timeout", timeout, MIN_PG_TIMEOUT, "0 never finishes")
                at_most(f"{where}.timeout", timeout, f"{where}.interval", interval)
            if timeout < shortest[1]:
                shortest = (f"{where}.timeout", timeout)
        limit_name, limit = shortest
        self._derive("statement_timeout", min(DEFAULT_STATEMENT_TIMEOUT, limit))
        self._derive("lock_timeout", min(DEFAULT_LOCK_TIMEOUT, self.statement_timeout))
        # libpq takes whole seconds, at least 1 (0 waits forever)
        self._derive("connect_timeout", max(1.0, min(DEFAULT_CONNECT_TIMEOUT, math.floor(limit))))
        ms = "PostgreSQL counts it in whole milliseconds and 0 means no timeout"
        with FieldError.at("statement_timeout"):
            at_least("statement_timeout", self.statement_timeout, MIN_PG_TIMEOUT, ms)
            at_most("statement_timeout", self.statement_timeout, limit_name, limit)
        with FieldError.at("lock_timeout"):
            at_least("lock_timeout", self.lock_timeout, MIN_PG_TIMEOUT, ms)
            at_most("lock_timeout", self.lock_timeout, "statement_timeout", self.statement_timeout)
        with FieldError.at("connect_timeout"):
            ct = self.connect_timeout
            if ct < 1 or ct != int(ct):
                raise ValueError(
                    f"connect_timeout ({ct:g}s) must be whole seconds, at least 1s: "
                    "libpq counts it in seconds and 0 waits forever"
                )
            if "connect_timeout" in self.model_fields_set:
                at_most("connect_timeout", ct, limit_name, max(limit, 1.0))

    def enabled_collectors(self) -> list[tuple[str, CollectorSettings]]:
        """(name, settings) of the collectors that run, in their first-run order."""
        return [
            (n, s) for n in sources.collector_names() if (s := getattr(self.collectors, n)).enabled
        ]

    def interval_of(self, settings: CollectorSettings) -> float:
        return settings.interval if settings.interval is not None else self.collect_interval

    def timeout_of(self, settings: CollectorSettings) -> float:
        """The collector's timeout, else the target's, shortened to the collector's interval."""
        if settings.timeout is not None:
            return settings.timeout
        return min(self.collect_timeout, self.interval_of(settings))

    def conninfo(self) -> str:
        """The DSN with the password filled in from env or file. Never log this."""
        from psycopg.conninfo import make_conninfo

        raw = self.dsn if self.dsn is not None else os.environ.get(self.dsn_env or "", "")
        if not raw:
            raise ConfigError(f"target {self.name}: environment variable {self.dsn_env} is empty")
        try:
            params = parse_dsn(raw)
        except ValueError as e:  # never echoes the DSN
            raise ConfigError(f"target {self.name}: {e}") from None
        if params.get("password"):
            register_secret(params["password"])
        password = None
        if self.password_env:
            password = os.environ.get(self.password_env)
            if password is None:
                raise ConfigError(
                    f"target {self.name}: environment variable {self.password_env} is not set"
                )
        elif self.password_file:
            try:
                password = self.password_file.read_text().strip()
            except OSError as e:
                raise ConfigError(
                    f"target {self.name}: password_file {self.password_file}: {e.strerror}"
                ) from None
        if password:
            register_secret(password)
            params["password"] = password
        return make_conninfo("", **params)

    def safe_dsn(self) -> str:
        """The DSN without any password, for logs and --check-config."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        if self.dsn is None:
            return f"${self.dsn_env}"
        try:
            params = conninfo_to_dict(self.dsn)
        except Exception:
            return "<unparseable DSN>"
        for key in params:
            if looks_secret(key):  # password, sslpassword
                params[key] = "<redacted>"
        return make_conninfo("", **params)


class Config(Model):
    model_config = DEFERRED

    targets: list[Target] = []
    apps: list[App] = []
    backups: list[Backup] = []  # exporter/backups/
    poolers: list[Pooler] = []  # exporter/poolers/: PgBouncer admin consoles
    # environment problems --check-config reports without failing (see parse_config)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return list(self._warnings)

    @model_validator(mode="after")
    def _check(self) -> Config:
        for kind, items in (("target", self.targets), ("app", self.apps)):
            with FieldError.at(f"{kind}s"):
                require_unique([t.name for t in items], f"{kind} names must be unique")
        if not (self.targets or self.apps or self.backups or self.poolers):
            raise ValueError("nothing to do: configure at least one target, app, backup or pooler")
        with FieldError.at("backups"):
            require_unique([b.name for b in self.backups], "backup names must be unique")
        with FieldError.at("poolers"):
            require_unique([p.name for p in self.poolers], "pooler names must be unique")
        targets = {t.name for t in self.targets}
        for bi, b in enumerate(self.backups):
            if b.sql is not None and b.sql.target not in targets:
                raise FieldError(
                    ("backups", bi, "sql", "target"),
                    f"no target named {b.sql.target!r} under targets:",
                )
        for ti, t in enumerate(self.targets):
            for qi, q in enumerate(t.queues):
                q._path = f"targets[{ti}].queues[{qi}]"
            for ri, r in enumerate(t.retention):
                r._path = f"targets[{ti}].retention[{ri}]"
        queryconfig.check_across_targets(self)  # also sets each query's _path
        return self


# --- loading and error reporting --------------------------------------------------------


class ConfigError(Exception):
    """A configuration problem; the message names file, path and value. Exit code 2."""


_SHOWN_MAX = 80  # a longer value is cut: it is there to recognise, not to copy


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _shown(loc: tuple, value: object, kind: str) -> str:
    """` (got 'value')`, or nothing when the value is a structure or may be a secret: under
    an unknown key (it may be a misspelt `password`), under a key that looks secret
    (password, token, dsn, key, auth...), or anywhere under `headers`."""
    keys = [str(p) for p in loc if isinstance(p, str)]
    if kind == "extra_forbidden" or value is None or isinstance(value, dict | list):
        return ""
    # a command's `env` (exporter/backups/) may carry credentials under any name
    if "headers" in keys or "env" in keys or any(looks_secret(k) for k in keys):
        return ""
    text = repr(value)
    if len(text) > _SHOWN_MAX:
        text = text[: _SHOWN_MAX - 4] + "...'"
    return f" (got {text})"


def _line_of(loc: tuple, lines: dict) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def located(source: str, loc: tuple, message: str, lines: dict) -> str:
    """`file:line: path: message`, scrubbed of registered secrets, URL credentials and
    query strings."""
    line = _line_of(loc, lines)
    where = f"{source}:{line}" if line else source
    return redact(scrub_urls(f"{where}: {_format_loc(loc)}: {message}"))


def format_validation_error(source: str, err: ValidationError, lines: dict) -> str:
    msgs = []
    for e in err.errors():
        # pydantic puts union branches and validator names in loc; keep the document path
        loc = tuple(p for p in e["loc"] if isinstance(p, int) or not str(p).startswith("function"))
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc = (*loc, *cause.path)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        msgs.append(located(source, loc, msg + _shown(loc, e.get("input"), e["type"]), lines))
    return "\n".join(msgs)


Environment = Literal["skip", "warn", "require"]


def _readable(path: Path) -> str | None:
    """Why `path` cannot be read, or None. Opened, never read: the content may be a secret."""
    try:
        with open(path, "rb"):
            pass
    except IsADirectoryError:
        return "is a directory"
    except OSError as e:
        return (e.strerror or "cannot be read").lower()
    return None


def _tls_problems(tls: TLS) -> list[tuple[str, str]]:
    """(field, why) for TLS files that exist but would fail every probe: a CA file that is not
    PEM certificates, a client certificate and key that do not load or need a passphrase.
    Loaded as the prober loads them (probes/http.py); OpenSSL's reasons never quote content."""
    import ssl

    out = []
    if tls.ca_file is not None and not _readable(tls.ca_file):
        try:
            ssl.create_default_context(cafile=str(tls.ca_file))
        except (ssl.SSLError, ValueError) as e:
            out.append(("ca_file", f"{tls.ca_file}: not a PEM CA certificate bundle ({_why(e)})"))
    files = [f for f in (tls.cert_file, tls.key_file) if f is not None]
    if tls.cert_file is not None and not any(_readable(f) for f in files):
        asked: list[bool] = []

        def no_passphrase() -> bytes:  # never let OpenSSL prompt on a terminal
            asked.append(True)
            return b""

        try:
            ssl.create_default_context().load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file else None, no_passphrase
            )
        except (ssl.SSLError, ValueError) as e:
            field = "key_file" if tls.key_file is not None else "cert_file"
            names = " and ".join(str(f) for f in files)
            why = "the key is encrypted: give an unencrypted key" if asked else _why(e)
            out.append((field, f"{names}: cannot be loaded as client certificate and key ({why})"))
    return out


def _why(e: Exception) -> str:
    reason = getattr(e, "reason", None)
    return str(reason).lower().replace("_", " ") if reason else "not PEM, or they do not match"


def environment_problems(config: Config) -> list[tuple[tuple, str, bool]]:
    """What the running exporter would fail on although the file is valid: environment
    variables not set, DSNs in them that cannot be parsed, files it cannot read. Each is
    (path, message, is_secret_source); the messages name variables and paths, never values."""
    out: list[tuple[tuple, str, bool]] = []

    def env_var(path: tuple, name: str) -> str | None:
        value = os.environ.get(name)
        if value is None:
            out.append((path, f"environment variable {name} is not set", True))
        elif not value:
            out.append((path, f"environment variable {name} is empty", True))
        return value or None

    def file(path: tuple, p: Path | None, secret: bool) -> None:
        if p is not None and (why := _readable(p)):
            out.append((path, f"{p}: {why}", secret))

    for ti, t in enumerate(config.targets):
        at = ("targets", ti)
        if t.dsn_env and (raw := env_var((*at, "dsn_env"), t.dsn_env)):
            try:
                parse_dsn(raw)
            except ValueError as e:
                out.append(((*at, "dsn_env"), f"{e} (from environment variable {t.dsn_env})", True))
        if t.password_env:
            env_var((*at, "password_env"), t.password_env)
        file((*at, "password_file"), t.password_file, True)
    for ai, app in enumerate(config.apps):
        for ei, ep in enumerate(app.endpoints):
            at = ("apps", ai, "endpoints", ei)
            refs = [
                ((*at, "headers", h), v) for h, v in ep.headers.items() if not isinstance(v, str)
            ]
            if ep.basic_auth:
                refs.append(((*at, "basic_auth", "password"), ep.basic_auth.password))
            for path, ref in refs:
                if ref.env is not None:
                    env_var((*path, "env"), ref.env)
                file((*path, "file"), ref.file, True)
            for name in ("ca_file", "cert_file", "key_file"):
                file((*at, "tls", name), getattr(ep.tls, name), False)
            for name, why in _tls_problems(ep.tls):
                out.append(((*at, "tls", name), why, False))
    for bi, b in enumerate(config.backups):
        if b.supabase is not None:
            at = ("backups", bi, "supabase", "token")
            if b.supabase.token.env is not None:
                env_var((*at, "env"), b.supabase.token.env)
            file((*at, "file"), b.supabase.token.file, True)
    return out


def parse_config(text: str, source: str = "<config>", environment: Environment = "skip") -> Config:
    """Validate a configuration's text. `environment` says what to do about variables and
    files it names that this machine lacks (see environment_problems): "skip" them (tests,
    the demo), "warn" about the secret ones (--check-config may run where the secrets are not
    mounted; TLS files are still required), or "require" all (starting, reloading)."""
    try:
        data, node = configyaml.load(text)
    except configyaml.YAMLProblem as e:
        raise ConfigError(redact(e.located(source))) from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    lines = configyaml.line_map(node) if node is not None else {}
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(source, e, lines)) from None
    if environment == "skip":
        return config
    errors, warnings = [], []
    for path, message, secret in environment_problems(config):
        text_ = located(source, path, message, lines)
        (warnings if secret and environment == "warn" else errors).append(text_)
    if errors:
        raise ConfigError("\n".join(errors))
    config._warnings = warnings
    return config


def load_config(path: str | Path, environment: Environment = "require") -> Config:
    p = Path(path)
    try:
        text = configyaml.read(p)
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
    except configyaml.YAMLProblem as e:
        raise ConfigError(e.located(str(p))) from None
    return parse_config(text, str(p), environment)
