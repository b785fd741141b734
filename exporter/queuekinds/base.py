"""What the queue kinds share: the catalog check of a relation, queries run the collector's
way, the reading every kind produces, and the `QueueKind` base class (its registry)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from exporter.config import Target
    from exporter.doctor import Report


class QueueConfigError(Exception):
    """The database does not match a queue's configuration; the message names the config path."""


def queue_path(target: Target, queue: Any) -> str:
    """The queue's path in the config file (targets[0].queues[1]) for error messages."""
    if queue._path:
        return queue._path
    # a Target built outside a Config (tests, the API): name it by target name instead
    return f"target {target.name}: queues[{target.queues.index(queue)}]"


# --- the catalog check ------------------------------------------------------------------

CATALOG_SQL = """
SELECT c.relkind::text,
       has_any_column_privilege(c.oid, 'SELECT'),
       a.attname::text,
       format_type(a.atttypid, NULL),
       t.typcategory::text,
       has_column_privilege(c.oid, a.attnum, 'SELECT'),
       CASE WHEN t.typtype = 'e' THEN
           ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid)
       END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = %s AND c.relname = %s
"""
SELECTABLE = {"r": "table", "p": "partitioned table", "v": "view", "m": "view", "f": "table"}


@dataclass(frozen=True)
class Column:
    type: str  # format_type, e.g. "timestamp with time zone"
    category: str  # pg_type.typcategory: S string, E enum, N numeric, D date/time
    readable: bool
    enum_labels: tuple[str, ...] | None


@dataclass
class TableInfo:
    relkind: str
    readable: bool
    columns: dict[str, Column] = field(default_factory=dict)


async def table_info(conn: psycopg.AsyncConnection, qualified: str) -> TableInfo | None:
    """The relation's kind, privileges and columns from the catalog; None when it is missing."""
    schema, name = qualified.split(".", 1)
    cur = await conn.execute(CATALOG_SQL, (schema, name), prepare=False)
    rows = await cur.fetchall()
    if not rows:
        return None
    info = TableInfo(rows[0][0], bool(rows[0][1]))
    for _, _, col, typ, cat, readable, labels in rows:
        if col is not None:
            info.columns[col] = Column(typ, cat, bool(readable), tuple(labels) if labels else None)
    return info


def relation_problem(path: str, key: str, name: str, info: TableInfo | None) -> str | None:
    """Why the relation `name` (config key `key`) cannot be read, or None when it can."""
    return unreadable(f"{path}.{key}", name, info)


def unreadable(where: str, name: str, info: TableInfo | None) -> str | None:
    """Why the relation `name` cannot be read (`where`: the config path and key), or None."""
    if info is None:
        return f'{where}: table "{name}" does not exist'
    if info.relkind not in SELECTABLE:
        return f'{where}: "{name}" is not a table or view'
    if not info.readable:
        return f'{where}: permission denied: cannot SELECT from "{name}"'
    return None


# --- queries ----------------------------------------------------------------------------


def ident(qualified: str) -> sql.Identifier:
    return sql.Identifier(*qualified.split(".", 1))


@dataclass(frozen=True)
class Query:
    name: str  # short name used by the doctor, the bench and docs/queues.md
    text: sql.Composed
    params: dict[str, Any]
    index_column: str | None  # the column an index must bound for the query to be O(active)
    # the status values of that index's predicate (WHERE status IN (...)); [] when no index
    index_statuses: list[str] = field(default_factory=list)
    # the recommended index: key columns after index_column, and INCLUDE columns, chosen so
    # that the index alone answers the query (an index-only scan reads no table rows)
    index_keys: tuple[str, ...] = ()
    index_include: tuple[str, ...] = ()
    # the doctor requires an index-only scan: the rows it reads accumulate (failed and dead
    # jobs), so reading each from the table would make the query O(history)
    index_only: bool = False


async def run(conn: psycopg.AsyncConnection, query: Query) -> list[tuple]:
    # prepare=False: a prepared statement may get a generic plan, and with parameters as
    # placeholders the planner cannot prove a partial index's predicate; planned with the
    # values every time, it can (planning these statements costs well under a millisecond).
    # Never prepared also keeps the statements working through a transaction-mode pooler.
    cur = await conn.execute(query.text, query.params, prepare=False)
    return await cur.fetchall()


async def explain_plan(conn: psycopg.AsyncConnection, query: Query) -> dict | None:
    """The query's plan (EXPLAIN without executing it): the top node of EXPLAIN (FORMAT JSON),
    None when there is none."""
    explain = sql.SQL("EXPLAIN (FORMAT JSON) ") + query.text
    cur = await conn.execute(explain, query.params, prepare=False)
    row = await cur.fetchone()
    plan = row[0] if row else None
    if isinstance(plan, str):  # a json column psycopg did not load (custom loaders)
        import json

        plan = json.loads(plan)
    return plan[0]["Plan"] if plan else None


async def estimate_rows(conn: psycopg.AsyncConnection, query: Query) -> float:
    """The planner's row estimate: reltuples/relpages from the last ANALYZE scaled to the
    table's current size, times the selectivity of the query's conditions."""
    plan = await explain_plan(conn, query)
    return float(plan["Plan Rows"]) if plan else 0.0


# --- what a kind measures ---------------------------------------------------------------


@dataclass
class Reading:
    """One queue's state, the same for every kind; the collector makes the families."""

    jobs: dict[str, float]  # exact count by status role (pending, processing, failed, ...)
    oldest_pending: float  # seconds; 0 when nothing is pending
    stuck: float
    retries_exhausted: float
    # finished within recent_window by outcome (completed, failed); None while unknown
    recent: dict[str, float] | None
    completed_estimate: float | None = None  # from planner statistics; None: not served
    dead_letter: float | None = None  # None: the queue has no dead letters configured
    # the failed counts are planner estimates past exact_count_limit; None: the kind counts
    # failed jobs exactly, always
    failed_estimated: bool | None = None


@dataclass(frozen=True)
class Member:
    """One queue a configured item stands for: the item itself, or each queue a wildcard
    finds. `settings` is the config item whose thresholds and settings apply; `ref` is what
    the kind needs to find the queue (the table kind: nothing, pgmq: the queue name)."""

    label: str
    settings: Any
    ref: str = ""
    dynamic: bool = False  # found at runtime: its threshold series come from the collector


KINDS: dict[str, type[QueueKind]] = {}


class QueueKind:
    """One configured `queues:` item of one kind, made per target by the queues collector (so
    state kept between runs lives on it). Subclasses set `key` (the config key) and implement
    `check` and `measure`; `members` expands an item that stands for several queues."""

    key: ClassVar[str]
    # whether members() reads the database (a "*" item listing its queues): only then does the
    # collector put it under a savepoint of its own, two round trips per item otherwise wasted
    lists_members: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "key" in cls.__dict__:
            KINDS[cls.key] = cls
        if "members" in cls.__dict__:
            cls.lists_members = True

    def __init__(self, target: Target, item: Any) -> None:
        self.target = target
        self.item = item

    @property
    def path(self) -> str:
        return queue_path(self.target, self.item)

    async def members(self, conn: psycopg.AsyncConnection) -> list[Member]:
        """The queues this item stands for (raise QueueConfigError when they cannot be listed)."""
        return [Member(self.item.label, self.item)]

    async def check(self, conn: psycopg.AsyncConnection, member: Member) -> list[str]:
        """What in the catalog keeps the member's queries from working, one message each."""
        raise NotImplementedError

    async def measure(self, conn: psycopg.AsyncConnection, member: Member) -> Reading:
        raise NotImplementedError

    async def doctor(self, conn: psycopg.AsyncConnection, report: Report) -> None:
        """`runbook-exporter doctor`'s checks of this item."""
        raise NotImplementedError
