"""Custom SQL metrics (`targets[].queries`, exporter/queryconfig.py; docs/custom-queries.md):
what the built-in collectors do not cover, as query-exporter and sql_exporter do it.

One `custom` job per target runs at the collector's interval; each query runs when its own
interval has passed, under its own statement_timeout, inside the run's read-only transaction
(exporter/db.py: a write fails in PostgreSQL with "cannot execute ... in a read-only
transaction"). Between its runs a query's last result is served again. Each query runs in a
savepoint with its timeout set for it alone (SET LOCAL, rolled back with the savepoint), sent
with the extended protocol (`stream`), so it is one statement: `SELECT 1; COMMIT` is refused
by the server. Rows are streamed: the first max_series become series, the rest are counted
(runbook_custom_query_series_dropped) and dropped, so memory stays bounded by max_series.

A query that fails (an error, its timeout, a label column missing from its result, a value that
is not a number, two rows with the same labels) serves runbook_custom_query_success 0 and
none of its metrics; the other queries are served, and the run counts as failed with the
query's config path in the message (so RunbookCollectorFailing names it). A NULL value gives
no sample; a NULL label value is the empty string.

User-defined metric names are not in docs/metrics.md (they come from the configuration); they
carry the labels `target`, the label columns and the static labels.
"""

from __future__ import annotations

import decimal
import logging
import math
import time
from dataclasses import dataclass, field

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from psycopg import sql
from psycopg.pq import TransactionStatus

from exporter.db import SQL_MARKER, run_transaction
from exporter.metrics import spec
from exporter.queryconfig import CustomQuery
from exporter.scheduler import PartialFailure
from exporter.secrets import redact
from exporter.sources import Collector

log = logging.getLogger("exporter.collectors.custom")
SRC = "collectors/custom.py"
TQ = ("target", "query")
# the run stops starting queries this long (at most a fifth of its timeout) before its own
# timeout (the connection's watchdog fires 0.5 s before it): a query left over stays due and
# runs in the next run
RUN_MARGIN = 0.7

SUCCESS = spec(
    "runbook_custom_query_success",
    "gauge",
    "1 when the custom query's last run succeeded; 0 when it failed (its metrics are then "
    'absent; the log and runbook_collector_success{collector="custom"} say why).',
    TQ,
    SRC,
)
DURATION = spec(
    "runbook_custom_query_duration_seconds",
    "gauge",
    "How long the custom query's last run took.",
    TQ,
    SRC,
)
LAST_SUCCESS = spec(
    "runbook_custom_query_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the custom query's last successful run (its results are served until the "
    "next run, at its own interval).",
    TQ,
    SRC,
)
DROPPED = spec(
    "runbook_custom_query_series_dropped",
    "gauge",
    "Rows of the custom query's last run past its max_series: dropped, not served.",
    TQ,
    SRC,
)

NUMERIC = (int, float, decimal.Decimal)


class QueryFailed(Exception):
    """The query ran, but its result cannot become metrics; the message says why."""


@dataclass
class QueryState:
    """What a query keeps between runs: its last outcome and the families it served."""

    last_run: float | None = None  # monotonic start of its last run
    success: bool = False
    duration: float = 0.0
    dropped: int = 0
    last_success_at: float | None = None
    families: list[Metric] = field(default_factory=list)
    error: str | None = None
    dropped_logged: bool = False


def families_of(q: CustomQuery, target: str, columns: list[str], rows: list[tuple]) -> list[Metric]:
    """The query's rows as its metric families (raises QueryFailed on a result that cannot be)."""
    index = {c: i for i, c in enumerate(columns)}
    missing = [c for c in (*q.labels, *(m.column for m in q.metrics)) if c not in index]
    # no row, no column names (the protocol sends them with the rows): nothing to check or
    # serve; `doctor` checks the columns of a query that returns none
    if missing and rows:
        raise QueryFailed(
            f"column(s) {missing} not in the result (it has {columns}): check labels and "
            "metrics[].column against the SELECT list"
        )
    label_names = list(q.label_names)
    fams: list[Metric] = []
    for m in q.metrics:
        cls = CounterMetricFamily if m.type == "counter" else GaugeMetricFamily
        fams.append(cls(m.family_name, m.help, labels=label_names))
    static = list(q.static_labels.values())
    seen: set[tuple[str, ...]] = set()
    for row in rows:
        labels = tuple("" if row[index[c]] is None else str(row[index[c]]) for c in q.labels)
        if labels in seen:
            shown = dict(zip(q.labels, labels, strict=True))
            raise QueryFailed(
                f"two rows have the same labels {shown}: make the label columns unique "
                "(GROUP BY them)"
            )
        seen.add(labels)
        for fam, m in zip(fams, q.metrics, strict=True):
            value = row[index[m.column]]
            if value is None:
                continue  # NULL: no sample
            if isinstance(value, bool) or not isinstance(value, NUMERIC):
                raise QueryFailed(
                    f"column {m.column!r} is {type(value).__name__}, not a number: cast it "
                    f"in the SQL (e.g. {m.column}::float8)"
                )
            v = float(value)
            if m.type == "counter" and (v < 0 or math.isnan(v)):
                raise QueryFailed(f"counter column {m.column!r} is {v:g}: a counter is >= 0")
            fam.add_metric([target, *labels, *static], v)
    return fams


class Custom(Collector):
    name = "custom"
    first_run = 90

    def __init__(self, target, settings) -> None:
        super().__init__(target, settings)
        self.states: dict[str, QueryState] = {q.name: QueryState() for q in target.queries}

    def due(self, q: CustomQuery, now: float) -> bool:
        st = self.states[q.name]
        if st.last_run is None:
            return True
        # half the job's interval of slack: a 60 s query on a 15 s job runs every 60 s, not 75
        slack = self.target.interval_of(self.settings) / 2
        return now - st.last_run >= q.interval_in(self.target) - slack

    async def collect(self, conn: psycopg.AsyncConnection) -> list[Metric]:
        if not self.target.queries:
            return []
        if conn.info.transaction_status == TransactionStatus.IDLE:  # called outside a run
            async with run_transaction(conn, self.target):
                return await self._collect(conn)
        return await self._collect(conn)

    async def _collect(self, conn: psycopg.AsyncConnection) -> list[Metric]:
        start = time.monotonic()
        budget = self.target.timeout_of(self.settings)
        deadline = start + budget - min(RUN_MARGIN, 0.2 * budget)
        for q in self.target.queries:
            now = time.monotonic()
            if not self.due(q, now):
                continue
            left = deadline - now
            if left < 0.05:  # no time left in this run: it stays due for the next
                continue
            await self.run_query(conn, q, min(q.timeout_in(self.target), left))
        return self._served()

    async def run_query(self, conn: psycopg.AsyncConnection, q: CustomQuery, timeout: float):
        st = self.states[q.name]
        began = time.monotonic()
        st.last_run = began
        dropped = 0
        try:
            columns, rows, dropped = await self._fetch(conn, q, timeout)
            fams = families_of(q, self.target.name, columns, rows)
        except (QueryFailed, psycopg.Error) as e:
            if isinstance(e, psycopg.Error) and (conn.broken or conn.closed):
                raise  # the connection is gone: the whole run fails and the target reconnects
            why = _describe(e, q, timeout)
            if isinstance(e, psycopg.errors.QueryCanceled) and timeout < q.timeout_in(self.target):
                why += (
                    f": the run had {timeout:.2f}s left of collectors.custom.timeout; raise it "
                    "or give the queries longer intervals"
                )
            self._failed(q, st, why)
        else:
            if st.error is not None:
                log.info("custom query succeeds again", extra=self._where(q))
            st.success, st.error, st.families = True, None, fams
            st.last_success_at = time.time()
            st.dropped = dropped
            if dropped and not st.dropped_logged:
                st.dropped_logged = True
                log.warning(
                    "custom query returned more rows than max_series: the rest are dropped",
                    extra={**self._where(q), "max_series": q.max_series, "dropped": dropped},
                )
        st.duration = time.monotonic() - began

    async def _fetch(
        self, conn: psycopg.AsyncConnection, q: CustomQuery, timeout: float
    ) -> tuple[list[str], list[tuple], int]:
        """The query's columns, its first max_series rows and how many more it returned.
        In a savepoint always rolled back: the SET LOCAL of its timeout ends with it."""
        ms = max(1, int(timeout * 1000))
        await conn.execute(
            sql.SQL(
                "SAVEPOINT runbook_query; SELECT set_config('statement_timeout', {}, true)"
            ).format(sql.Literal(f"{ms}ms"))
        )
        rows: list[tuple] = []
        dropped = 0
        columns: list[str] = []
        try:
            cur = conn.cursor()
            # stream: the extended protocol (one statement) and rows as they come
            async for row in cur.stream(f"{q.sql}\n{SQL_MARKER}"):
                if len(rows) < q.max_series:
                    rows.append(row)
                else:
                    dropped += 1
            columns = [d.name for d in cur.description or []]
        finally:
            if conn.info.transaction_status in (
                TransactionStatus.INTRANS,
                TransactionStatus.INERROR,
            ):
                await conn.execute(
                    "ROLLBACK TO SAVEPOINT runbook_query; RELEASE SAVEPOINT runbook_query"
                )
            elif not (conn.broken or conn.closed):
                # the statement ended the run's transaction (refused at config time; this
                # keeps it from ever running a later query outside the read-only transaction)
                raise RuntimeError(f"{q.path}: the query ended the run's transaction")
        return columns, rows, dropped

    def _failed(self, q: CustomQuery, st: QueryState, why: str) -> None:
        if st.error != why:
            log.warning("custom query failed", extra={**self._where(q), "error": why})
        st.success, st.error, st.families, st.dropped = False, why, [], 0

    def _where(self, q: CustomQuery) -> dict[str, str]:
        return {"target": self.target.name, "query": q.name, "path": q.path}

    def _served(self) -> list[Metric]:
        t = self.target.name
        own = {s: s.family() for s in (SUCCESS, DURATION, LAST_SUCCESS, DROPPED)}
        out: list[Metric] = []
        problems = []
        for q in self.target.queries:
            st = self.states[q.name]
            if st.last_run is None:
                continue
            own[SUCCESS].add_metric([t, q.name], 1 if st.success else 0)
            own[DURATION].add_metric([t, q.name], st.duration)
            own[DROPPED].add_metric([t, q.name], st.dropped)
            if st.last_success_at is not None:
                own[LAST_SUCCESS].add_metric([t, q.name], st.last_success_at)
            out.extend(st.families)
            if st.error is not None:
                problems.append(f"{q.path} ({q.name}): {st.error}")
        out.extend(f for f in own.values() if f.samples)
        if problems:
            raise PartialFailure("; ".join(problems), out)
        return out

    async def doctor(self, conn: psycopg.AsyncConnection, report) -> None:
        for q in self.target.queries:
            where = f"custom query {q.name} [{q.path}]"
            try:
                async with conn.transaction() as tx:  # a savepoint in the check's transaction
                    cur = conn.cursor()
                    rows = [r async for r in cur.stream(f"EXPLAIN (FORMAT JSON) {q.sql}")]
                    raise psycopg.Rollback(tx)
            except psycopg.Error as e:
                if conn.broken or conn.closed:
                    raise
                report.finding(f"{where}: EXPLAIN fails: {_describe(e, q, None)}")
                continue
            plan = rows[0][0] if rows else None
            if isinstance(plan, str):
                import json

                plan = json.loads(plan)
            top = plan[0]["Plan"] if plan else {}
            report.ok(
                f"{where}: plan {top.get('Node Type', '?')}, cost {top.get('Total Cost', '?')}, "
                f"about {top.get('Plan Rows', '?')} row(s) (max_series {q.max_series})"
            )
            try:
                missing = await _missing_columns(conn, q)
            except psycopg.Error as e:
                if conn.broken or conn.closed:
                    raise
                report.note(f"{where}: its columns cannot be checked: {_describe(e, q, None)}")
            else:
                if missing:
                    report.finding(f"{where}: {missing}")
            for rel in sorted(_seq_scans(top)):
                report.note(
                    f"{where}: the plan reads {rel} sequentially: every run costs O(table); "
                    "filter on an indexed column"
                )
            if isinstance(top.get("Plan Rows"), int | float) and top["Plan Rows"] > q.max_series:
                report.note(
                    f"{where}: the planner expects more rows than max_series: the rest would "
                    "be dropped",
                )


async def _missing_columns(conn: psycopg.AsyncConnection, q: CustomQuery) -> str | None:
    """The label and value columns the query's result lacks (its columns from a run with
    LIMIT 0), or None when it has them all."""
    async with conn.transaction() as tx:
        cur = await conn.execute(f"SELECT * FROM (\n{q.sql}\n) AS q LIMIT 0")
        columns = [d.name for d in cur.description or []]
        raise psycopg.Rollback(tx)
    wanted = (*q.labels, *(m.column for m in q.metrics))
    missing = [c for c in wanted if c not in columns]
    if not missing:
        return None
    return f"column(s) {missing} not in the result (it has {columns})"


def _seq_scans(node: dict) -> set[str]:
    """The relations a plan reads with a sequential scan."""
    found = {node.get("Relation Name", "?")} if node.get("Node Type") == "Seq Scan" else set()
    for child in node.get("Plans", []):
        found |= _seq_scans(child)
    return found


def _describe(e: BaseException, q: CustomQuery, timeout: float | None) -> str:
    if isinstance(e, QueryFailed):
        return str(e)
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, psycopg.errors.ReadOnlySqlTransaction):
        text += " (custom queries run in a read-only transaction: they may only read)"
    elif isinstance(e, psycopg.errors.QueryCanceled) and timeout is not None:
        text += f" (the query's timeout is {timeout:.3g}s)"
    return redact(f"{type(e).__name__}: {text}")
