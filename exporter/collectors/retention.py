"""Retention compliance (runbook 001, "Retention Policy Compliance": data older than the
retention period exists = the cleanup job failed): per configured table (`targets[].retention`,
exporter/retentionconfig.py) the rows past retention and the oldest row's age, with the period
and grace as series so the shipped rule (alerts/retention.rules.yml) stays static.

Cost. One statement per table, both parts served by a btree index on the timestamp column:
the rows past retention are counted through a LIMIT of max_count + 1 (an index range scan that
stops there: O(max_count), never O(table)), and min(column) is one index probe. Without the
index both are sequential scans; statement_timeout bounds them and `runbook-exporter doctor`
prints the CREATE INDEX CONCURRENTLY (docs/retention.md).

A table whose relation, column or privilege is missing, or whose query fails, loses its own
series only (runbook_retention_up 0 for it, the run counts as failed with the config path in
the message), as queues do.
"""

from __future__ import annotations

import re

import psycopg
from prometheus_client.core import Metric
from psycopg import sql
from psycopg.pq import TransactionStatus

from exporter.db import run_transaction, savepoint
from exporter.metrics import spec
from exporter.queuekinds.base import TableInfo, table_info, unreadable
from exporter.retentionconfig import RetentionTable
from exporter.scheduler import PartialFailure
from exporter.sources import Collector

SRC = "collectors/retention.py"
L = ("target", "schema", "table")
TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")

EXPIRED = spec(
    "runbook_retention_expired_rows",
    "gauge",
    "Rows whose retention column is older than the retention period, counted up to the "
    "table's max_count (runbook_retention_expired_rows_capped 1: at least that many).",
    L,
    SRC,
)
CAPPED = spec(
    "runbook_retention_expired_rows_capped",
    "gauge",
    "1 when the count of rows past retention reached max_count (the true count is higher).",
    L,
    SRC,
)
OLDEST = spec(
    "runbook_retention_oldest_row_age_seconds",
    "gauge",
    "Age of the oldest row by the retention column (now - min(column)); 0 when the table has "
    "no row with a value.",
    L,
    SRC,
)
PERIOD = spec(
    "runbook_retention_period_seconds",
    "gauge",
    "The table's configured retention period: older rows should have been deleted.",
    L,
    SRC,
)
GRACE = spec(
    "runbook_retention_grace_seconds",
    "gauge",
    "How long rows may stay past the retention period before RetentionCleanupBehind fires.",
    L,
    SRC,
)
UP = spec(
    "runbook_retention_up",
    "gauge",
    "1 when the table's retention check succeeded; 0 when its table, column or privilege is "
    "missing or its query failed (its other measured series are then absent).",
    L,
    SRC,
)

# errors that concern one table and leave the connection usable
_TABLE_ERRORS = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.QueryCanceled,
    psycopg.errors.LockNotAvailable,
)


def retention_query(item: RetentionTable) -> sql.Composed:
    """Rows past retention (up to max_count + 1) and the oldest row's age, in one statement."""
    table = sql.Identifier(*item.schema_table)
    col = sql.Identifier(item.column)
    return sql.SQL(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM {t} WHERE {c} < now() - make_interval("
        "secs => %(period)s) LIMIT %(limit)s) expired),"
        " extract(epoch FROM now() - (SELECT min({c}) FROM {t}))::float8"
    ).format(t=table, c=col)


def query_params(item: RetentionTable) -> dict[str, float | int]:
    return {"period": item.period, "limit": item.max_count + 1}


def column_problem(item: RetentionTable, info: TableInfo | None) -> str | None:
    """Why the item's table or column cannot be measured, with its config path; None if it can."""
    why = unreadable(f"{item.path}.table", item.table, info)
    if why is not None or info is None:
        return why
    col = info.columns.get(item.column)
    if col is None:
        return f'{item.path}.column: column "{item.column}" does not exist in {item.table}'
    if not col.readable:
        return f'{item.path}.column: permission denied: cannot SELECT column "{item.column}"'
    if col.type not in TIMESTAMP_TYPES:
        return f'{item.path}.column: column "{item.column}" is {col.type}, not a timestamp or date'
    return None


def index_bounds(plan: dict, quoted: str) -> bool:
    """Whether an index on the column bounds every scan of the plan (EXPLAIN with sequential
    scans off): the count's scan has an Index Cond on the column, min()'s is an index scan
    under a Limit (the planner's min/max rewrite: one index entry). A full scan of another
    index (the primary key, filtered) or a Seq Scan does not count."""
    pattern = re.compile(rf"(?<![\w\"]){re.escape(quoted)}(?![\w\"])")
    scans = 0

    def visit(node: dict, parent: str) -> bool:
        nonlocal scans
        kind = node["Node Type"]
        if kind == "Seq Scan":
            return False
        if kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan"):
            scans += 1
            if not (pattern.search(node.get("Index Cond", "")) or parent == "Limit"):
                return False
        return all(visit(child, kind) for child in node.get("Plans", []))

    return visit(plan, "") and scans >= 2


class Retention(Collector):
    name = "retention"
    first_run = 70

    async def collect(self, conn: psycopg.AsyncConnection) -> list[Metric]:
        if not self.target.retention:
            return []
        if conn.info.transaction_status == TransactionStatus.IDLE:  # called outside a run
            async with run_transaction(conn, self.target):
                return await self._collect(conn)
        return await self._collect(conn)

    async def _collect(self, conn: psycopg.AsyncConnection) -> list[Metric]:
        name = self.target.name
        fams = {s: s.family() for s in (EXPIRED, CAPPED, OLDEST, PERIOD, GRACE, UP)}
        problems: list[str] = []
        for item in self.target.retention:
            labels = [name, *item.schema_table]
            fams[PERIOD].add_metric(labels, item.period)
            fams[GRACE].add_metric(labels, item.grace)
            try:
                async with savepoint(conn):  # a failed table leaves the others their run
                    problem = column_problem(item, await table_info(conn, item.table))
                    if problem is None:
                        cur = await conn.execute(
                            retention_query(item), query_params(item), prepare=False
                        )
                        expired, age = await cur.fetchone()
            except _TABLE_ERRORS as e:
                if conn.broken or conn.closed:
                    raise
                problem = f"{item.path}: {type(e).__name__}: {str(e).strip()}"
                if isinstance(e, psycopg.errors.QueryCanceled):
                    problem += " (is there an index on the column? runbook-exporter doctor)"
            if problem is not None:
                problems.append(problem)
                fams[UP].add_metric(labels, 0)
                continue
            fams[UP].add_metric(labels, 1)
            fams[EXPIRED].add_metric(labels, min(expired, item.max_count))
            fams[CAPPED].add_metric(labels, 1 if expired > item.max_count else 0)
            fams[OLDEST].add_metric(labels, max(0.0, age or 0.0))
        out = [f for f in fams.values() if f.samples]
        if problems:
            raise PartialFailure("; ".join(problems), out)
        return out

    async def doctor(self, conn: psycopg.AsyncConnection, report) -> None:
        from exporter import doctor  # the doctor imports the collectors: import it late

        for item in self.target.retention:
            where = f"retention {item.table}.{item.column} [{item.path}]"
            info = await table_info(conn, item.table)
            problem = column_problem(item, info)
            if problem is not None:
                report.finding(f"{where}: {problem}")
                continue
            assert info is not None
            if info.relkind in ("v", "m", "f"):
                report.note(f"{where}: a view or foreign table: index check skipped")
                continue
            query = doctor.qc.Query(
                "retention", retention_query(item), query_params(item), item.column
            )
            plan = await doctor.explain(conn, query)
            quoted = await doctor._quote(conn, item.column)
            if index_bounds(plan, quoted):
                report.ok(f"{where}: an index on {item.column} bounds the query")
                continue
            schema, table = item.schema_table
            index = f"{table[:40]}_{item.column[:15]}_retention_idx"
            how = "CREATE INDEX" if info.relkind == "p" else "CREATE INDEX CONCURRENTLY"
            fix = (
                f"{how} IF NOT EXISTS {await doctor._quote(conn, index)} ON "
                f"{await doctor._quote(conn, schema)}.{await doctor._quote(conn, table)} "
                f"({quoted});"
            )
            report.finding(
                f"{where}: no index on {item.column}: every run scans the whole table", fix=fix
            )
