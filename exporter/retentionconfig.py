"""`targets[].retention`: the tables whose rows must not outlive a retention period (runbook
001, "Retention Policy Compliance"), read by exporter/collectors/retention.py.

    retention:
      - table: public.error_logs   # schema.table (public. is assumed)
        column: created_at         # timestamp, timestamptz or date; needs an index
        period: 30d                # rows older than this are past retention
        grace: 1d                  # how long they may stay before RetentionCleanupBehind
        max_count: 100000          # count rows past retention up to this many

Kept apart from exporter/config.py (which only adds the `Target.retention` field) so the
collector, its docs and its tests own their model.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from exporter.configtypes import IDENT_RE, Duration, FieldError, Model, require_unique

# a period shorter than this is a typo (`30m` for `30d`): no cleanup job runs that often
MIN_PERIOD = 3600.0


def qualified_table(v: Any) -> str:
    """`table` or `schema.table` -> `schema.table` (public. assumed); ValueError otherwise."""
    if not isinstance(v, str):
        raise ValueError("give the table as table or schema.table")
    parts = v.split(".")
    if len(parts) > 2 or not all(parts) or not all(IDENT_RE.match(p) for p in parts):
        raise ValueError(f"invalid table name {v!r}: use table or schema.table")
    return v if len(parts) == 2 else f"public.{v}"


class RetentionTable(Model):
    table: str
    column: str = "created_at"
    period: Duration
    # a daily cleanup leaves rows up to a day past the period before its next run
    grace: Duration = 86400.0
    # bounds the count: at most max_count + 1 index entries are read per run
    max_count: int = Field(100_000, ge=1, le=10_000_000)
    # where the item sits in the file (targets[0].retention[1]), for runtime errors
    _path: str = PrivateAttr("")

    @field_validator("table", mode="before")
    @classmethod
    def _table(cls, v: Any) -> str:
        return qualified_table(v)

    @field_validator("column")
    @classmethod
    def _column(cls, v: str) -> str:
        if not IDENT_RE.match(v):
            raise ValueError(f"invalid column name {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> RetentionTable:
        if self.period < MIN_PERIOD:
            raise FieldError(
                ("period",),
                f"period ({self.period:g}s) must be at least 1h: a retention period is days "
                "(30d), a shorter one is usually a unit typo",
            )
        return self

    @property
    def schema_table(self) -> tuple[str, str]:
        schema, table = self.table.split(".", 1)
        return schema, table

    @property
    def path(self) -> str:
        return self._path or f"retention[{self.table}]"


def check_unique(items: list[RetentionTable]) -> None:
    """One item per table: the series are labelled by schema and table."""
    require_unique([r.table for r in items], "retention tables must be unique within a target")
