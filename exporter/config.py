"""Configuration: YAML validated by pydantic models that forbid unknown keys.

Errors name the file, the path inside it (with the YAML line where known) and the offending
value, and the CLI exits 2 on them. Defaults are the thresholds of the source runbooks
(shared/runbooks/README.md); every threshold can be overridden per target, queue and endpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from exporter.collectors import DB_COLLECTORS
from exporter.configtypes import (
    IDENT_RE,
    Duration,
    LabelValue,
    Model,
    Ratio,
    StatusList,
    ordered_pair,
    require_unique,
)
from exporter.probes.config import App
from exporter.secrets import register_secret

# --- collectors -------------------------------------------------------------------------


class CollectorSettings(Model):
    enabled: bool = True
    interval: Duration | None = None  # None: the target's collect_interval
    timeout: Duration | None = None  # None: the target's collect_timeout


class ConnectionsSettings(CollectorSettings):
    # sessions are also broken down by application and user; past this many distinct values
    # the rest are summed under "other" so cardinality stays bounded
    max_applications: int = Field(20, ge=0, le=1000)
    max_users: int = Field(20, ge=0, le=1000)


class TablesSettings(CollectorSettings):
    top_n: int = Field(50, ge=1, le=10000)
    interval: Duration | None = 60.0  # table stats move slowly; pg_class scans are not free


class StatementsSettings(CollectorSettings):
    top_n: int = Field(20, ge=0, le=1000)
    query_text_length: int = Field(120, ge=0, le=1000)
    interval: Duration | None = 60.0


class Collectors(Model):
    queues: CollectorSettings = CollectorSettings()
    connections: ConnectionsSettings = ConnectionsSettings()
    database: CollectorSettings = CollectorSettings()
    tables: TablesSettings = TablesSettings()
    statements: StatementsSettings = StatementsSettings()


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

    @property
    def label(self) -> str:
        return self.name or self.table.split(".", 1)[1]

    @property
    def schema_table(self) -> tuple[str, str]:
        schema, table = self.table.split(".", 1)
        return schema, table


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


class Target(Model):
    name: LabelValue
    dsn: str | None = None  # libpq URI or key=value; keep the password out of it
    dsn_env: str | None = None  # environment variable that holds the whole DSN
    password_env: str | None = None
    password_file: Path | None = None
    collect_interval: Duration = Field(15.0, gt=0)
    collect_timeout: Duration = Field(10.0, gt=0)
    statement_timeout: Duration = Field(5.0, gt=0)
    lock_timeout: Duration = Field(1.0, gt=0)
    connect_timeout: Duration = Field(5.0, ge=1)
    collectors: Collectors = Collectors()
    queues: list[Queue] = []
    thresholds: PgThresholds = PgThresholds()

    @model_validator(mode="after")
    def _check(self) -> Target:
        if (self.dsn is None) == (self.dsn_env is None):
            raise ValueError("give exactly one of dsn or dsn_env")
        if self.password_env and self.password_file:
            raise ValueError("give at most one of password_env or password_file")
        require_unique([q.label for q in self.queues], "queue names must be unique within a target")
        return self

    def enabled_collectors(self) -> list[tuple[str, CollectorSettings]]:
        """(name, settings) of the collectors that run, in their first-run order."""
        return [(n, s) for n in DB_COLLECTORS if (s := getattr(self.collectors, n)).enabled]

    def interval_of(self, settings: CollectorSettings) -> float:
        return settings.interval if settings.interval is not None else self.collect_interval

    def timeout_of(self, settings: CollectorSettings) -> float:
        return settings.timeout if settings.timeout is not None else self.collect_timeout

    def conninfo(self) -> str:
        """The DSN with the password filled in from env or file. Never log this."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        raw = self.dsn if self.dsn is not None else os.environ.get(self.dsn_env or "", "")
        if not raw:
            raise ConfigError(f"target {self.name}: environment variable {self.dsn_env} is empty")
        try:
            params = conninfo_to_dict(raw)
        except Exception:  # the message may echo the DSN: say what is wrong without it
            raise ConfigError(f"target {self.name}: the DSN cannot be parsed") from None
        if params.get("password"):
            register_secret(str(params["password"]))
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
        if "password" in params:
            params["password"] = "<redacted>"
        return make_conninfo("", **params)


class Config(Model):
    targets: list[Target] = []
    apps: list[App] = []

    @model_validator(mode="after")
    def _check(self) -> Config:
        for kind, items in (("target", self.targets), ("app", self.apps)):
            require_unique([t.name for t in items], f"{kind} names must be unique")
        if not self.targets and not self.apps:
            raise ValueError("nothing to do: configure at least one target or app")
        for ti, t in enumerate(self.targets):
            for qi, q in enumerate(t.queues):
                q._path = f"targets[{ti}].queues[{qi}]"
        return self


# --- loading and error reporting --------------------------------------------------------


class ConfigError(Exception):
    """A configuration problem; the message names file, path and value. Exit code 2."""


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict:
    """Map each path in the YAML document to the line it starts on (1-based)."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value
            out[(*path, k)] = key.start_mark.line + 1
            _line_map(value, (*path, k), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out)
    return out


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def format_validation_error(source: str, err: ValidationError, lines: dict) -> str:
    msgs = []
    for e in err.errors():
        # pydantic puts union branches and validator names in loc; keep the document path
        loc = tuple(p for p in e["loc"] if isinstance(p, int) or not str(p).startswith("function"))
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        where = f"{source}:{line}" if line else source
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        msgs.append(f"{where}: {_format_loc(loc)}: {msg}{shown}")
    return "\n".join(msgs)


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        # parsed again for line numbers only when there is an error to place
        lines = _line_map(yaml.compose(text))
        raise ConfigError(format_validation_error(source, e, lines)) from None


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
    return parse_config(text, str(p))
