"""`targets[].queries`: custom SQL metrics (docs/custom-queries.md), run by
exporter/collectors/custom.py on the target's read-only, time-bounded session.

    queries:
      - name: error_logs_last_hour      # the `query` label of its runbook_custom_query_* series
        sql: |
          SELECT error_type, count(*) AS errors FROM public.error_logs
          WHERE "timestamp" > now() - interval '1 hour' GROUP BY error_type
        interval: 1m                    # default: collectors.custom.interval
        timeout: 5s                     # default: the target's statement_timeout
        labels: [error_type]            # result columns that become labels
        static_labels: {team: backend}  # fixed labels on every series of the query
        max_series: 100                 # rows past this are dropped and counted
        metrics:
          - name: app_error_logs_last_hour
            column: errors              # the result column holding the value
            type: gauge                 # or counter (exposed with _total)
            help: Errors logged in the last hour by type (runbook 000).

Everything that can be checked without a database is checked here, with the path of the
offending key; what only the result can tell (a label column missing from it, a value that is
not a number) is the query's runtime error (runbook_custom_query_success 0 and a log line).
Kept apart from exporter/config.py, which only adds the `Target.queries` field and calls
`check_target` / `check_across_targets`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from exporter.configtypes import Duration, FieldError, LabelValue, Model, at_least, at_most

if TYPE_CHECKING:
    from exporter.config import Config, Target

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# the exporter's own names: a later version may add any metric under this prefix
RESERVED_PREFIX = "runbook_"
RESERVED_LABELS = {
    "target": "the exporter sets it to the target's name on every series",
    "job": "Prometheus sets it on every scraped series (yours would become exported_job)",
    "instance": "Prometheus sets it on every scraped series (yours would become exported_instance)",
}
# what a metric query may start with; anything else (COMMIT, SET, DELETE, CALL) is refused
# before it reaches the database (which would refuse a write anyway: the session is read-only)
QUERY_START_RE = re.compile(
    r"^(?:\s|--[^\n]*\n|/\*.*?\*/|\()*(select|with|values|table)\b", re.I | re.S
)
MAX_HELP = 500
# the collector that runs the queries (exporter/collectors/custom.py): its interval and timeout
COLLECTOR = "custom"
MAX_STATIC_VALUE = 200


class QueryMetric(Model):
    name: str
    column: str  # the result column holding the value
    type: Literal["gauge", "counter"] = "gauge"
    help: str = Field(min_length=1, max_length=MAX_HELP)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not METRIC_NAME_RE.match(v):
            raise ValueError(
                f"invalid metric name {v!r}: letters, digits, _ and :, not starting with a digit"
            )
        if v.startswith(RESERVED_PREFIX):
            raise ValueError(
                f"metric name {v!r}: the prefix {RESERVED_PREFIX} is the exporter's own; "
                "pick your own prefix (e.g. app_)"
            )
        return v

    @model_validator(mode="after")
    def _suffix(self) -> QueryMetric:
        if self.type == "gauge" and self.name.endswith("_total"):
            raise FieldError(
                ("name",),
                f"metric name {self.name!r}: _total is for counters (promtool refuses it on a "
                "gauge); drop the suffix or set type: counter",
            )
        return self

    @property
    def family_name(self) -> str:
        """The family as client_python names it: a counter without its _total."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    @property
    def exposed_name(self) -> str:
        return f"{self.family_name}_total" if self.type == "counter" else self.name


class CustomQuery(Model):
    name: LabelValue  # the `query` label
    sql: str
    interval: Duration | None = None  # None: the custom collector's interval
    timeout: Duration | None = None  # None: the target's statement_timeout
    labels: list[str] = []
    static_labels: dict[str, str] = {}
    metrics: list[QueryMetric] = Field(min_length=1)
    max_series: int = Field(100, ge=1, le=10_000)
    _path: str = PrivateAttr("")

    @field_validator("sql")
    @classmethod
    def _sql(cls, v: str) -> str:
        text = v.strip().removesuffix(";").rstrip()
        if not text:
            raise ValueError("the query is empty")
        if not QUERY_START_RE.match(text):
            raise ValueError(
                "a metric query is one SELECT (or WITH ... SELECT, VALUES, TABLE) statement"
            )
        return text

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        for name in v:
            _label_name(name)
        return v

    @field_validator("static_labels")
    @classmethod
    def _static(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            _label_name(name)
            if len(value) > MAX_STATIC_VALUE or any(ord(c) < 32 for c in value):
                raise ValueError(
                    f"static label {name}: at most {MAX_STATIC_VALUE} characters, no control "
                    "characters"
                )
        return v

    @model_validator(mode="after")
    def _check(self) -> CustomQuery:
        names = [*self.labels, *self.static_labels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FieldError(("labels",), f"label names given twice: {dupes}")
        for i, m in enumerate(self.metrics):
            if m.column in self.labels:
                raise FieldError(
                    ("metrics", i, "column"),
                    f"column {m.column!r} is a label column; a column is a label or a value",
                )
        families = [m.family_name for m in self.metrics]
        for i, m in enumerate(self.metrics):
            if families.count(m.family_name) > 1:
                raise FieldError(
                    ("metrics", i, "name"), f"metric {m.exposed_name} is given twice in the query"
                )
        return self

    @property
    def label_names(self) -> tuple[str, ...]:
        """The labels of its metrics: target, the label columns, the static labels."""
        return ("target", *self.labels, *self.static_labels)

    @property
    def path(self) -> str:
        return self._path or f"queries[{self.name}]"

    def timeout_in(self, target: Target) -> float:
        return self.timeout if self.timeout is not None else target.statement_timeout

    def interval_in(self, target: Target) -> float:
        if self.interval is not None:
            return self.interval
        return target.interval_of(getattr(target.collectors, COLLECTOR))


def _label_name(name: str) -> None:
    if not LABEL_NAME_RE.match(name) or name.startswith("__"):
        raise ValueError(
            f"invalid label name {name!r}: letters, digits and _, not starting with a digit or __"
        )
    if name in RESERVED_LABELS:
        raise ValueError(f"label {name!r} is reserved: {RESERVED_LABELS[name]}")


def check_target(target: Target) -> None:
    """The queries of one target: unique names and metrics, intervals and timeouts that fit
    the custom collector's run (raised as FieldError with the path under the target)."""
    names: set[str] = set()
    for i, q in enumerate(target.queries):
        if q.name in names:
            raise FieldError(("queries", i, "name"), f"query names must be unique: {q.name!r}")
        names.add(q.name)
    seen: dict[str, str] = {}
    for i, q in enumerate(target.queries):
        for j, m in enumerate(q.metrics):
            other = seen.setdefault(m.family_name, q.name)
            if other != q.name:
                raise FieldError(
                    ("queries", i, "metrics", j, "name"),
                    f"metric {m.exposed_name} is also given by query {other!r}",
                )
    settings = getattr(target.collectors, COLLECTOR)
    job_interval, job_timeout = target.interval_of(settings), target.timeout_of(settings)
    for i, q in enumerate(target.queries):
        if q.interval is not None:
            with FieldError.at("queries", i, "interval"):
                at_least(
                    f"queries[{i}].interval",
                    q.interval,
                    job_interval,
                    "the custom collector runs every collectors.custom.interval (or the "
                    "target's collect_interval); lower that to run a query more often",
                )
        with FieldError.at("queries", i, "timeout"):
            at_least(f"queries[{i}].timeout", q.timeout_in(target), 0.001, "0 is no limit")
            at_most(
                f"queries[{i}].timeout",
                q.timeout_in(target),
                "the custom collector's timeout (collectors.custom.timeout)",
                job_timeout,
            )


def check_across_targets(config: Config) -> None:
    """A metric name given on several targets is one family on /metrics: one type, one help."""
    first: dict[str, tuple[int, QueryMetric]] = {}
    for ti, t in enumerate(config.targets):
        for qi, q in enumerate(t.queries):
            q._path = f"targets[{ti}].queries[{qi}]"
            for mi, m in enumerate(q.metrics):
                where, had = first.setdefault(m.family_name, (ti, m))
                for key in ("type", "help"):
                    if getattr(had, key) != getattr(m, key):
                        raise FieldError(
                            ("targets", ti, "queries", qi, "metrics", mi, key),
                            f"metric {m.exposed_name} has another {key} on target "
                            f"{config.targets[where].name}: a metric has one {key}",
                        )
