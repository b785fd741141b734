"""`runbook-exporter doctor`: check every target against the configuration, before the
exporter runs into it at 3 a.m.

For each target: can we connect (the DSN is shown without its password), can the role read the
statistics views (pg_monitor), is pg_stat_statements installed and loaded. For each queue: do
its table and columns exist with usable types and privileges (the same catalog check the
collector runs, with the same config-path messages), and can an index serve each of the
collector's queries -- the actual queries are EXPLAINed with sequential scans disabled, so a
small table still shows which index the planner would use. For every query no index serves,
the exact `CREATE INDEX CONCURRENTLY` statement is printed.

Exit codes: 0 all well, 1 findings (a missing table or index counts: the checks ran and found
something to fix), 2 a target could not be checked (no password, cannot connect).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from exporter import queuekinds, sources
from exporter.backups import runner as backup_runner
from exporter.collectors import queues as qc
from exporter.config import Config, ConfigError, Queue, Target
from exporter.db import describe_error, open_connection, run_transaction
from exporter.secrets import redact

APPLICATION_NAME = "runbook-exporter-doctor"


@dataclass
class Report:
    findings: int = 0
    errors: int = 0

    def line(self, level: str, text: str, indent: int = 1, fix: str | None = None) -> None:
        pad = "  " * indent
        print(f"{pad}{level:<8} {redact(text)}")
        if fix:
            for fix_line in fix.splitlines():
                print(f"{pad}           {fix_line}")

    def ok(self, text: str, indent: int = 1) -> None:
        self.line("ok", text, indent)

    def note(self, text: str, indent: int = 1) -> None:
        self.line("note", text, indent)

    def finding(self, text: str, indent: int = 1, fix: str | None = None) -> None:
        self.findings += 1
        self.line("FINDING", text, indent, fix)

    def error(self, text: str, indent: int = 1) -> None:
        self.errors += 1
        self.line("ERROR", text, indent)


def run_doctor(config: Config) -> int:
    report = Report()
    asyncio.run(_doctor(config, report))
    print(f"doctor: {report.findings} finding(s), {report.errors} error(s)")
    if report.errors:
        return 2
    return 1 if report.findings else 0


async def _doctor(config: Config, report: Report) -> None:
    if not config.targets:
        print("no database targets configured")
    await _check_targets(config, report)
    # each backup's source read once, as its job would (exporter/backups/)
    await backup_runner.doctor(config.backups, {t.name: t for t in config.targets}, report)


async def _check_targets(config: Config, report: Report) -> None:
    for t in config.targets:
        print(f"target {t.name} ({t.safe_dsn()})")
        try:
            # set up like the exporter's own sessions (timeouts, read-only, statements marked
            # so they stay out of the statements collector's top N)
            conn = await open_connection(t, application_name=APPLICATION_NAME)
        except ConfigError as e:
            report.error(str(e))
            continue
        except Exception as e:
            report.error(f"cannot connect: {describe_error(e)}")
            continue
        try:
            async with conn:
                await check_target(conn, t, report)
        except psycopg.Error as e:
            report.error(f"check aborted: {type(e).__name__}: {str(e).strip()}")


async def _one(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> Any:
    cur = await conn.execute(query, params, prepare=False)
    return await cur.fetchone()


async def check_target(conn: psycopg.AsyncConnection, t: Target, report: Report) -> None:
    # each check is one bounded read-only transaction, as a collector run is (exporter/db.py),
    # so the doctor works through a transaction-mode pooler too
    async with run_transaction(conn, t):
        await check_role(conn, report)
    # each collector's own checks, also of the disabled ones (their findings become notes)
    for collector in sources.collectors():
        async with run_transaction(conn, t):
            await collector(t, getattr(t.collectors, collector.name)).doctor(conn, report)
    # the configured queues' tables and indexes, whether or not their collector runs
    for q in t.queues:
        if isinstance(q, Queue):
            print(f"  queue {q.label} ({q.table}) [{qc.queue_path(t, q)}]")
            async with run_transaction(conn, t):
                await check_queue(conn, t, q, report)
        else:  # the other kinds check themselves (exporter/queuekinds/)
            print(f"  queue {q.label or '*'} ({q.describe()}) [{qc.queue_path(t, q)}]")
            async with run_transaction(conn, t):
                await queuekinds.kind_of(q)(t, q).doctor(conn, report)


async def check_role(conn: psycopg.AsyncConnection, report: Report) -> None:
    user, version, monitor = await _one(
        conn,
        "SELECT current_user::text, current_setting('server_version'),"
        " pg_has_role(current_user, 'pg_monitor', 'USAGE')",
    )
    report.ok(f'connected: PostgreSQL {version} as role "{user}"')
    if monitor:
        report.ok("the role can read every session and statement statistic (pg_monitor)")
    else:
        (quoted,) = await _one(conn, "SELECT quote_ident(current_user)")
        report.finding(
            "the role is not a member of pg_monitor: other sessions' queries and "
            "pg_stat_statements texts are hidden from it",
            fix=f"GRANT pg_monitor TO {quoted};",
        )


# --- queues -----------------------------------------------------------------------------

INDEXES_SQL = """
SELECT c.relname::text, i.indisvalid, i.indpred IS NOT NULL, n.nspname::text
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = %(rel)s::regclass
   OR i.indrelid IN (SELECT relid FROM pg_partition_tree(%(rel)s::regclass))
"""


STATUS_STATS_SQL = """
SELECT most_common_vals::text::text[], most_common_freqs FROM pg_stats
WHERE schemaname = %s AND tablename = %s AND attname = %s
"""


async def check_queue(conn: psycopg.AsyncConnection, t: Target, q: Queue, report: Report) -> None:
    info, problems = await qc.check_queue(conn, t, q)
    for p in problems:
        report.finding(p, indent=2)
    if problems or info is None:
        return
    cols = ", ".join(
        f"{c} {info.columns[c].type}"
        for c in (q.status_column, q.created_at_column, q.updated_at_column, q.retry_count_column)
        if c is not None
    )
    report.ok(f"table and columns: {cols}", indent=2)
    if q.retry_count_column is None:
        report.note(
            "no retry_count_column: runbook_queue_retries_exhausted_jobs is always 0", indent=2
        )
    for c in (q.created_at_column, q.updated_at_column):
        if info.columns[c].type == "timestamp without time zone":
            report.note(
                f'column "{c}" has no time zone: ages assume the writers use the server\'s '
                "TimeZone setting",
                indent=2,
            )
    regclass = sql.Identifier(*q.schema_table).as_string(conn)
    indexes = {
        name: (valid, partial, schema)
        for name, valid, partial, schema in await _all(conn, INDEXES_SQL, {"rel": regclass})
    }
    for name, (valid, _, schema) in sorted(indexes.items()):
        if not valid:  # left behind by a failed CREATE INDEX CONCURRENTLY; still maintained
            fix = (
                f"DROP INDEX CONCURRENTLY {await _quote(conn, schema)}.{await _quote(conn, name)};"
            )
            report.finding(f"index {name} is invalid: no query uses it", indent=2, fix=fix)
    if info.relkind in ("v", "m", "f"):
        report.note(f"{q.table} is a view or foreign table: index checks skipped", indent=2)
    else:
        for query in qc.queries(q):
            if query.index_column is not None:
                await check_index(conn, q, info.relkind, query, indexes, report)
        shown = f"{await _quote(conn, q.schema_table[0])}.{await _quote(conn, q.schema_table[1])}"
        await check_visibility(conn, regclass, shown, report)
    # the status column's statistics (only ANALYZE gathers them): None when it has none
    stats = await _one(conn, STATUS_STATS_SQL, (*q.schema_table, q.status_column))
    await check_terminal(conn, q, stats is not None, report)
    check_unmapped(q, stats, report)
    if q.dead_letter_table:
        (n,) = await _one(conn, qc.dead_letter_query(q).text)
        report.note(
            f"dead-letter table {q.dead_letter_table} holds {n} row(s); it is counted in full "
            "every run, so keep it cleared (runbook 003: daily)",
            indent=2,
        )


VISIBILITY_SQL = """
SELECT c.relpages, c.relallvisible,
       coalesce('autovacuum_enabled=false' = ANY (c.reloptions), false)
FROM pg_class c WHERE c.oid = %s::regclass
"""
# below this many pages the table costs nothing to read whatever the visibility map says
VISIBILITY_MIN_PAGES = 1000
VISIBILITY_MIN_SHARE = 0.5


async def check_visibility(
    conn: psycopg.AsyncConnection, regclass: str, shown: str, report: Report
) -> None:
    """Index-only scans skip the table only for pages the visibility map marks all-visible,
    which VACUUM (autovacuum) sets: a table autovacuum never visits reads its failed jobs
    from the table after all."""
    row = await _one(conn, VISIBILITY_SQL, (regclass,))
    if row is None:
        return
    pages, visible, autovacuum_off = row
    if autovacuum_off:
        report.finding(
            f"autovacuum is disabled on {shown}: the visibility map goes stale and the"
            " index-only scans of the queue queries read the table again",
            indent=2,
            fix=f"ALTER TABLE {shown} RESET (autovacuum_enabled);",
        )
    elif pages >= VISIBILITY_MIN_PAGES and visible < pages * VISIBILITY_MIN_SHARE:
        report.note(
            f"only {visible / pages:.0%} of the table's {pages} pages are all-visible: the"
            " index-only scans read the rest from the table until autovacuum (or VACUUM) has"
            " run on it",
            indent=2,
        )


async def _all(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> list[tuple]:
    cur = await conn.execute(query, params, prepare=False)
    return await cur.fetchall()


async def _quote(conn: psycopg.AsyncConnection, name: str) -> str:
    """Quote an identifier the way PostgreSQL prints it (bare when it can be)."""
    (quoted,) = await _one(conn, "SELECT quote_ident(%s)", (name,))
    return quoted


def _plan_nodes(node: dict) -> list[dict]:
    out = [node]
    for child in node.get("Plans", []):
        out.extend(_plan_nodes(child))
    return out


async def explain(conn: psycopg.AsyncConnection, query: qc.Query, index_only: bool = False) -> dict:
    """The query's plan with sequential scans disabled: on a small table the planner would
    rightly prefer a seq scan, and we want to know whether it *can* use an index. With
    `index_only`, bitmap scans are disabled too: a bitmap scan always reads the table, and
    the question is whether an index-only scan is possible (whether the visibility map makes
    it cheap is a matter of VACUUM, checked separately)."""
    plan = None
    async with conn.transaction() as tx:  # a savepoint inside the check's transaction
        await conn.execute("SET LOCAL enable_seqscan = off")
        if index_only:
            await conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = await qc.explain_plan(conn, query)
        # rolled back rather than released: a released SET LOCAL would last for the rest of
        # the check's transaction
        raise psycopg.Rollback(tx)
    assert plan is not None  # EXPLAIN always returns a plan
    return plan


def index_serves(plan: dict, column: str, quoted: str, partial: set[str], status: str) -> bool:
    """Whether every scan of the plan is an index scan that bounds the rows read: an Index
    Cond on `column`, or (for the status column) a partial index whose predicate the planner
    proved from the query's status list. A full scan of an unrelated index does not count."""
    pattern = re.compile(rf"(?<![\w\"]){re.escape(quoted)}(?![\w\"])")
    scans = 0
    for node in _plan_nodes(plan):
        if node["Node Type"] == "Seq Scan":
            return False
        name = node.get("Index Name")
        if name is None:
            continue
        scans += 1
        bounded = bool(pattern.search(node.get("Index Cond", "")))
        if not bounded and not (column == status and name in partial):
            return False
    return scans > 0


async def create_index_statement(
    conn: psycopg.AsyncConnection,
    q: Queue,
    relkind: str,
    query: qc.Query,
    existing: set[str],
) -> str:
    schema, table = q.schema_table
    column = query.index_column
    if column is None:
        raise ValueError(f"the {query.name} query needs no index")
    base = f"{table[:50]}_{query.name}_idx"
    name = base
    for i in range(2, 100):  # a name not taken in the schema (bounded: at most 98 tries)
        if name not in existing:
            (taken,) = await _one(
                conn,
                "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)",
                (schema, name),
            )
            if not taken:
                break
        name = f"{base}{i}"
    values = ", ".join(sql.Literal(v).as_string(conn) for v in query.index_statuses)
    # CONCURRENTLY does not block writers, but PostgreSQL refuses it on a partitioned table
    how = "CREATE INDEX" if relkind == "p" else "CREATE INDEX CONCURRENTLY"
    keys = ", ".join([await _quote(conn, c) for c in (column, *query.index_keys)])
    include = ""
    if query.index_include:  # covering: the scan answers from the index, reads no table rows
        cols = ", ".join([await _quote(conn, c) for c in query.index_include])
        include = f" INCLUDE ({cols})"
    return (
        f"{how} {await _quote(conn, name)} ON {await _quote(conn, schema)}."
        f"{await _quote(conn, table)} ({keys}){include}"
        f" WHERE {await _quote(conn, q.status_column)} IN ({values});"
    )


async def check_index(
    conn: psycopg.AsyncConnection,
    q: Queue,
    relkind: str,
    query: qc.Query,
    indexes: dict[str, tuple[bool, bool, str]],
    report: Report,
) -> None:
    what = {
        "active": "counting pending/processing jobs",
        "failed": "counting failed/dead jobs",
        "recent": "counting recently finished jobs",
    }[query.name]
    column = query.index_column
    assert column is not None  # only queries an index can serve are checked
    plan = await explain(conn, query, index_only=query.index_only)
    partial = {name for name, (valid, is_partial, _) in indexes.items() if valid and is_partial}
    used = sorted({n["Index Name"] for n in _plan_nodes(plan) if "Index Name" in n})
    served = index_serves(plan, column, await _quote(conn, column), partial, q.status_column)
    only = all(n["Node Type"] == "Index Only Scan" for n in _plan_nodes(plan) if "Index Name" in n)
    if served and (only or not query.index_only):
        how = "an index-only scan of" if only else "index"
        report.ok(f"{query.name} query ({what}) uses {how} {', '.join(used)}", indent=2)
        return
    stmt = await create_index_statement(conn, q, relkind, query, set(indexes))
    if served:
        # bounded by the index, but it fetches every failed and dead row from the table:
        # O(failed + dead history), the rows nobody clears
        report.finding(
            f"{query.name} query ({what}) reads every such row from the table through index"
            f" {', '.join(used)}: it gets slower as failed jobs accumulate; a covering index"
            " answers it from the index alone; create",
            indent=2,
            fix=stmt,
        )
        return
    how = f"reads index {', '.join(used)} in full" if used else "scans the whole table"
    report.finding(
        f"{query.name} query ({what}) {how}: it gets slower as the table grows; create",
        indent=2,
        fix=stmt,
    )


async def check_terminal(
    conn: psycopg.AsyncConnection, q: Queue, has_stats: bool, report: Report
) -> None:
    if q.count_terminal == "off" or not q.statuses.completed:
        report.note("completed jobs are not counted (count_terminal: off)", indent=2)
        return
    if q.count_terminal == "exact":
        report.note(
            "count_terminal: exact counts every completed row on each run: O(table); "
            "estimate reads planner statistics instead",
            indent=2,
        )
        return
    schema, table = q.schema_table
    # the estimate needs the status column's most common values, which only ANALYZE gathers
    # (CREATE INDEX and VACUUM set the row count but not the column statistics)
    if not has_stats:
        report.finding(
            "the status column has no planner statistics: the completed estimate is a guess "
            "until autovacuum or you analyze the table",
            indent=2,
            fix=f"ANALYZE {await _quote(conn, schema)}.{await _quote(conn, table)};",
        )
        return
    (analyzed,) = await _one(
        conn,
        "SELECT (SELECT greatest(last_analyze, last_autoanalyze) FROM pg_stat_all_tables"
        " WHERE schemaname = %s AND relname = %s)",
        (schema, table),
    )
    est = await qc.estimate_rows(conn, qc.completed_query(q))
    when = f"last analyzed {analyzed:%Y-%m-%d %H:%M:%S %Z}" if analyzed else "analyze time unknown"
    report.ok(f"completed jobs estimated at {est:.0f} from planner statistics ({when})", indent=2)


def check_unmapped(q: Queue, stats: tuple | None, report: Report) -> None:
    """Status values the planner has seen that no role maps: they are not counted at all."""
    if not stats or stats[0] is None:
        return
    mapped = q.statuses.role_of()
    unmapped = [
        f"{v!r} (~{f:.1%})" for v, f in zip(stats[0], stats[1], strict=False) if v not in mapped
    ]
    if unmapped:
        report.note(
            "status values no role maps (not counted; map them under statuses if they "
            f"matter): {', '.join(unmapped)}",
            indent=2,
        )
