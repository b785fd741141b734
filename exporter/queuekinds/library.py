"""What every job-library preset shares (`pg_boss:`, `oban:`, `river:`...): the `LibraryKind`
base class. A preset module (exporter/queuekinds/<library>.py) says how to find the library
and its version, how to list its queues and which SQL reads one queue; this base turns that
into the queues collector's `Reading`, the "*" enumeration, the catalog check and the doctor.

A preset writes three queries per queue, each bounded by the library's own indexes:

    state      one row: pending, scheduled, processing, failed (will be retried), dead
               (discarded / retries exhausted, kept by the library), oldest pending age in
               seconds, stuck, retries exhausted, failures within recent_window seen among
               the unfinished rows (a job waiting for its retry)
               -- over the unfinished jobs only (a partial index on the state, usually)
    recent     one row: completed, failed within recent_window (a range of the finish time),
               or None when the library keeps nothing finished (recent is then absent)
    completed  the finished jobs the library keeps, EXPLAINed for the planner's estimate and
               never run, or None

The doctor EXPLAINs state and recent with sequential scans disabled: a plan that still reads
a table sequentially means no index bounds the query, and the preset's `index_fix` says which
index the library itself creates (or its later versions do).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from psycopg import sql

from exporter.config import LibraryQueue
from exporter.queuekinds.base import (
    Member,
    Query,
    QueueConfigError,
    QueueKind,
    Reading,
    estimate_rows,
    explain_plan,
    run,
    table_info,
    unreadable,
)

if TYPE_CHECKING:
    from exporter.doctor import Report

log = logging.getLogger("exporter.queuekinds.library")

# the columns of a preset's state query, in order
STATE_COLUMNS = (
    "pending",
    "scheduled",
    "processing",
    "failed",
    "dead",
    "oldest_pending",
    "stuck",
    "retries_exhausted",
    "failed_recent",
)


@dataclass(frozen=True)
class Install:
    """What a preset found of its library in one schema: the version it detected (shown by
    the doctor and `discover`) and the facts its queries depend on (a column that only some
    versions have...)."""

    version: str  # "pg-boss schema 24 (pg-boss 10.1.1 to 10.4.x)"
    facts: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # e.g. "newer than the versions this preset covers"


@dataclass(frozen=True)
class LibraryQueries:
    state: Query
    recent: Query | None
    completed: Query | None  # EXPLAINed for the estimate, never run

    def bounded(self) -> list[Query]:
        """The queries a scrape runs, which an index must bound."""
        return [q for q in (self.state, self.recent) if q is not None]


def schema_ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


async def one_row(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> tuple | None:
    cur = await conn.execute(query, params, prepare=False)
    return await cur.fetchone()


async def has_schema(conn: psycopg.AsyncConnection, schema: str) -> tuple[bool, bool]:
    """(the schema exists, the role may use it)."""
    row = await one_row(
        conn,
        "SELECT true, has_schema_privilege(oid, 'USAGE') FROM pg_namespace WHERE nspname = %s",
        (schema,),
    )
    return (bool(row), bool(row and row[1]))


async def distinct_values(
    conn: psycopg.AsyncConnection, table: sql.Identifier, column: str, limit: int
) -> list[str]:
    """The distinct values of an indexed column (a queue-name column, for libraries without a
    registry of queues), at most `limit`: a loose index scan -- one index descent per value,
    O(queues x log jobs), where SELECT DISTINCT would read every job."""
    col = sql.Identifier(column)
    text = sql.SQL(
        "WITH RECURSIVE q(v) AS ("
        " (SELECT {col}::text FROM {t} WHERE {col} IS NOT NULL ORDER BY {col} LIMIT 1)"
        " UNION ALL"
        " SELECT (SELECT {col}::text FROM {t} WHERE {col} > q.v ORDER BY {col} LIMIT 1)"
        " FROM q WHERE q.v IS NOT NULL)"
        " SELECT v FROM q WHERE v IS NOT NULL LIMIT %(limit)s"
    ).format(col=col, t=table)
    cur = await conn.execute(text, {"limit": limit}, prepare=False)
    return [r[0] for r in await cur.fetchall()]


class LibraryKind(QueueKind):
    """One configured library item. Subclasses set `key` (the config key), `library`,
    `covers` and implement `detect`, `tables`, `queue_names` and `queries`."""

    library: ClassVar[str]  # "pg-boss"
    covers: ClassVar[str]  # the versions the preset covers, in words: "pg-boss 10 to 12"
    # for `discover`: relations (tables or views) that, found together in one schema, mean the
    # library is installed there; every relation of that schema whose name is in `owned` (by
    # default these) is the library's, never reported as a hand-rolled jobs table
    detect_tables: ClassVar[tuple[str, ...]]
    owned: ClassVar[tuple[str, ...]] = ()
    # tables that hold only unfinished jobs or the library's live workers (Solid Queue's
    # execution tables, worker heartbeats): read whole, they still cost O(active jobs)
    active_tables: ClassVar[tuple[str, ...]] = ()
    # queries that read a table whole by the library's design, which the doctor does not
    # check for an index: a library that deletes finished jobs (graphile-worker, pgqueuer)
    # keeps only unfinished ones in the table its state query reads
    reads_whole: ClassVar[tuple[str, ...]] = ()
    item: LibraryQueue

    def __init__(self, target: Any, item: LibraryQueue) -> None:
        super().__init__(target, item)
        self.install: Install | None = None  # what the last catalog check found
        self._left_out: int | None = None  # queues "*" left out, as last logged

    # --- what a preset implements -------------------------------------------------------

    async def detect(self, conn: psycopg.AsyncConnection) -> Install:
        """The library's version in the item's schema; QueueConfigError (naming the config
        path) when the library is missing there or its version is not covered."""
        raise NotImplementedError

    def tables(self, install: Install) -> list[str]:
        """The relations (schema.name) the queries read: each must be readable."""
        raise NotImplementedError

    async def queue_names(self, conn: psycopg.AsyncConnection, install: Install) -> list[str]:
        """Every queue the library has: what "*" stands for (bounded by max_queues). A
        library without a queue registry lists the queues of its unfinished jobs."""
        raise NotImplementedError

    def queries(self, install: Install, queue: str) -> LibraryQueries:
        raise NotImplementedError

    async def queue_problem(
        self, conn: psycopg.AsyncConnection, install: Install, queue: str
    ) -> str | None:
        """Why a queue configured by name cannot be read (a library with a registry of
        queues: it is not in it), or None. Libraries without a registry: never."""
        return None

    def index_fix(self, install: Install, query: Query) -> str | None:
        """The CREATE INDEX that bounds `query` (what the library's later versions create),
        for the doctor; None when there is nothing to suggest."""
        return None

    # --- shared -------------------------------------------------------------------------

    @property
    def schema(self) -> str:
        return self.item.schema_name

    def names_limit(self) -> int:
        """How many queue names a library without a registry need list for "*": max_queues
        plus the names "*" skips, plus one to know whether any were left out."""
        return self.item.max_queues + len(self.excluded()) + 1

    def where(self, member: Member | None = None) -> str:
        """The config path (and queue) for messages."""
        base = f"{self.path}.{self.item.kind}"
        if member is not None and member.dynamic:
            return f'{base} (queue "{member.ref}")'
        return base

    def missing(self, what: str) -> QueueConfigError:
        return QueueConfigError(
            f"{self.where()}: {what} in this database (is {self.library} installed there, "
            f"in schema {self.schema}? set schema: if it uses another)"
        )

    async def require_schema(self, conn: psycopg.AsyncConnection) -> None:
        exists, usage = await has_schema(conn, self.schema)
        if not exists:
            raise self.missing(f'schema "{self.schema}" does not exist')
        if not usage:
            raise QueueConfigError(f'{self.where()}: permission denied for schema "{self.schema}"')

    def unsupported(self, found: str) -> QueueConfigError:
        return QueueConfigError(
            f"{self.where()}: unsupported {self.library} version: {found}; this preset covers "
            f"{self.covers} (upgrade {self.library}, or read its table with a table: item)"
        )

    def excluded(self) -> set[str]:
        """What "*" skips: queues of the same library and schema configured by name, and
        labels other items use."""
        out: set[str] = set()
        for q in self.target.queues:
            if (
                isinstance(q, LibraryQueue)
                and q.kind == self.item.kind
                and q.schema_name == self.schema
                and not q.wildcard
            ):
                out.add(q.queue)
            if q.label is not None:
                out.add(q.label)
        return out

    async def members(self, conn: psycopg.AsyncConnection) -> list[Member]:
        q = self.item
        if not q.wildcard:
            return [Member(q.label or q.queue, q, q.queue)]
        install = await self.detect(conn)
        await self._check_tables(install, raise_first=True, conn=conn)
        names = sorted(n for n in await self.queue_names(conn, install) if n not in self.excluded())
        taken, left = names[: q.max_queues], len(names) - q.max_queues
        if max(left, 0) != self._left_out:
            self._left_out = max(left, 0)
            if left > 0:
                log.warning(
                    f"{self.library} queues left out: more than max_queues",
                    extra={
                        "target": self.target.name,
                        "item": self.path,
                        "left_out": left,
                        "max_queues": q.max_queues,
                        "first_left_out": names[q.max_queues],
                    },
                )
        return [Member(n, q, n, dynamic=True) for n in taken]

    async def _check_tables(
        self, install: Install, conn: psycopg.AsyncConnection, raise_first: bool = False
    ) -> list[str]:
        problems = []
        for rel in self.tables(install):
            problem = unreadable(self.where(), rel, await table_info(conn, rel))
            if problem is not None:
                if raise_first:
                    raise QueueConfigError(problem)
                problems.append(problem)
        return problems

    async def check(self, conn: psycopg.AsyncConnection, member: Member) -> list[str]:
        try:
            install = await self.detect(conn)
        except QueueConfigError as e:
            return [str(e)]
        problems = await self._check_tables(install, conn)
        if not problems and not member.dynamic:
            problem = await self.queue_problem(conn, install, member.ref)
            if problem is not None:
                problems.append(f"{self.where(member)}: {problem}")
        if not problems:
            self.install = install
        return problems

    async def measure(self, conn: psycopg.AsyncConnection, member: Member) -> Reading:
        install = self.install
        if install is None:  # check() passed on this connection before
            install = self.install = await self.detect(conn)
        qs = self.queries(install, member.ref)
        row = (await run(conn, qs.state))[0]
        state = dict(zip(STATE_COLUMNS, (float(v or 0) for v in row), strict=True))
        jobs = {k: state[k] for k in ("pending", "scheduled", "processing", "failed", "dead")}
        reading = Reading(
            jobs, state["oldest_pending"], state["stuck"], state["retries_exhausted"], None
        )
        if qs.recent is not None:
            done, failed = (await run(conn, qs.recent))[0]
            reading.recent = {
                "completed": float(done or 0),
                "failed": float(failed or 0) + state["failed_recent"],
            }
        if qs.completed is not None:
            reading.completed_estimate = await estimate_rows(conn, qs.completed)
        return reading

    # --- doctor -------------------------------------------------------------------------

    async def doctor(self, conn: psycopg.AsyncConnection, report: Report) -> None:
        """The library found and its version, its tables readable, the queue(s), and for
        each queue whether an index bounds every query a scrape runs."""
        try:
            install = await self.detect(conn)
        except QueueConfigError as e:
            report.finding(str(e), indent=2)
            return
        report.ok(f"{self.library} found in schema {self.schema}: {install.version}", indent=2)
        if install.note:
            report.note(install.note, indent=2)
        problems = await self._check_tables(install, conn)
        role = (await one_row(conn, "SELECT quote_ident(current_user)"))[0]  # type: ignore[index]
        for p in problems:
            fix = f"GRANT SELECT ON ALL TABLES IN SCHEMA {quote_ident(self.schema)} TO {role};"
            report.finding(p, indent=2, fix=fix)
        if problems:
            return
        self.install = install
        members = await self.members(conn)
        if self.item.wildcard:
            report.ok(f"{len(members)} {self.library} queue(s) are collected", indent=2)
            if self._left_out:
                report.note(
                    f"{self._left_out} more queue(s) left out by max_queues "
                    f"({self.item.max_queues}): raise it or configure them by name",
                    indent=2,
                )
        # per query: the queues an index bounds and those read in full (one line each, not
        # one per queue: "*" may stand for fifty)
        bounded: dict[str, list[str]] = {}
        unbounded: dict[str, list[str]] = {}
        small: dict[str, list[str]] = {}
        fixes: dict[str, str | None] = {}
        for m in members:
            if not m.dynamic:
                problem = await self.queue_problem(conn, install, m.ref)
                if problem is not None:
                    report.finding(f"{self.where(m)}: {problem}", indent=2)
                    continue
            qs = self.queries(install, m.ref)
            # a queue that keeps few finished jobs is read whole cheaply, and its plan says
            # nothing about the index a big one would use
            few = qs.completed is not None and (
                await estimate_rows(conn, qs.completed) < SMALL_TABLE_ROWS
            )
            for query in qs.bounded():
                if query.name in self.reads_whole:
                    continue  # by the library's design: the preset's doctor says what it reads
                scans = await unbounded_scans(conn, query, self.schema, self.active_tables)
                if scans and few:
                    scans = None
                group = unbounded if scans else bounded if scans is not None else small
                group.setdefault(query.name, []).append(m.ref)
                fixes[query.name] = self.index_fix(install, query)
        for name, queues in bounded.items():
            report.ok(f"{_queues(queues)}: the {name} query is bounded by an index", indent=2)
        for name, queues in small.items():
            report.line(
                "note",
                f"{_queues(queues)}: too few jobs (under {SMALL_TABLE_ROWS:,}) for the plan to "
                f"show whether an index bounds the {name} query; run the doctor again once "
                "the queue has grown"
                + (", or make sure this index exists:" if fixes.get(name) else ""),
                indent=2,
                fix=fixes.get(name),
            )
        for name, queues in unbounded.items():
            report.finding(
                f"{_queues(queues)}: no index bounds the {name} query, which reads the "
                "queue's jobs in full: a scrape costs O(jobs kept), not O(active jobs)",
                indent=2,
                fix=fixes[name],
            )


def _queues(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"queue {shown}" if len(names) == 1 else f"queues {shown}"


def quote_ident(name: str) -> str:
    """An identifier as PostgreSQL prints it: bare when it can be (for the doctor's fixes)."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


# below this many rows (planner statistics) a plan does not tell whether an index bounds it
SMALL_TABLE_ROWS = 10000
ROWS_SQL = """
SELECT GREATEST(reltuples, 0) FROM pg_class WHERE relname = %s AND relnamespace = %s::regnamespace
"""
INDEX_SQL = """
SELECT i.indpred IS NOT NULL, a.attname::text FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE c.relname = %s AND c.relnamespace = %s::regnamespace
"""


async def unbounded_scans(
    conn: psycopg.AsyncConnection, query: Query, schema: str, active: tuple[str, ...] = ()
) -> set[str] | None:
    """What the query's plan reads without an index bounding it, with sequential scans
    disabled (the planner then uses any index it can). A scan is bounded when its index is
    partial (the planner proved the predicate from the query: the library's partial index
    on unfinished jobs) or its Index Cond ranges over `query.index_column` (a finish time;
    several as "a|b") and constrains the index's leading column; a whole-table walk through
    the primary key is not, a lookup per row of an outer scan is, and so is any read of the
    `active` tables. None when only tables of fewer than SMALL_TABLE_ROWS rows are read
    without a bound: the planner's pick there says nothing."""
    plan = None
    async with conn.transaction() as tx:  # a savepoint inside the doctor's transaction
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = await explain_plan(conn, query)
        raise psycopg.Rollback(tx)  # a released SET LOCAL would outlive the savepoint
    # (node, whether it runs once per row of an outer scan: a nested loop's inner side or a
    # correlated subplan, whose Index Cond is then a lookup by the outer row's key)
    nodes: list[tuple[dict, bool]] = []

    def walk(node: dict, per_row: bool) -> None:
        nodes.append((node, per_row))
        for child in node.get("Plans", []):
            rel = child.get("Parent Relationship")
            walk(child, per_row or rel in ("Inner", "SubPlan"))

    if plan is not None:
        walk(plan, False)
    unbounded: set[str] = set()
    for node, per_row in nodes:
        if node.get("Relation Name") in active:
            continue
        if node.get("Node Type") == "Seq Scan":
            unbounded.add(node.get("Relation Name", "?"))
            continue
        index = node.get("Index Name")
        if index is None or (per_row and node.get("Index Cond")):
            continue
        cond = node.get("Index Cond", "")
        row = await one_row(conn, INDEX_SQL, (index, schema))
        partial, first = (bool(row[0]), row[1]) if row else (False, None)
        # a range over index_column (columns: "a|b") bounds the scan only when the index's
        # leading column is constrained too: a condition on a later column alone walks the
        # whole index
        cols = query.index_column.split("|") if query.index_column else []
        ranged = any(_mentions(cond, c) for c in cols) and first is not None
        if not (partial or (ranged and _mentions(cond, first))):
            unbounded.add(node.get("Relation Name") or await _table_of(conn, index, schema))
    # on a small table the planner rightly takes whichever index (the primary key as soon as
    # any other): its pick says nothing about the index a big one would use. Only the others
    # count, and if only small tables were left, None
    out = set()
    for rel in unbounded:
        rows = await one_row(conn, ROWS_SQL, (rel, schema))
        if not (rows and rows[0] is not None and rows[0] < SMALL_TABLE_ROWS):
            out.add(rel)
    return None if unbounded and not out else out


def _mentions(cond: str, column: str) -> bool:
    return re.search(rf"\b{re.escape(column)}\b", cond) is not None


async def _table_of(conn: psycopg.AsyncConnection, index: str, schema: str) -> str:
    row = await one_row(
        conn,
        "SELECT i.indrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = %s AND c.relnamespace = %s::regnamespace",
        (index, schema),
    )
    return str(row[0]).rsplit(".", 1)[-1] if row else f"index {index}"
