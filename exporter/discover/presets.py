"""`discover` for the job-library presets: every library preset (exporter/queuekinds/, a
`LibraryKind` with `detect_tables`) is looked for in every schema -- its tables found together
in one schema mean the library is there -- and its own `detect` tells the version, its
`queue_names` the queues (bounded). The library's tables are then claimed: the hand-rolled
queue search (catalog.py) does not report them as jobs tables of their own.

Each library's reads run in a savepoint: a library whose version is not covered, or whose
tables the role cannot read, is reported (its item written as a comment, with the reason) and
the rest of the inspection goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from exporter import queuekinds
from exporter.config import LIBRARY_QUEUES, Target
from exporter.db import savepoint
from exporter.queuekinds.base import QueueConfigError
from exporter.queuekinds.library import LibraryKind

# queue names listed per library (in a comment); "*" follows them all anyway
NAMES_SHOWN = 20

SCHEMAS_SQL = """
SELECT n.nspname::text, array_agg(DISTINCT c.relname::text)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = ANY(%(names)s::text[]) AND c.relkind IN ('r', 'p', 'v', 'm')
  AND NOT c.relispartition
GROUP BY n.nspname
HAVING count(DISTINCT c.relname) = %(wanted)s
ORDER BY 1
"""


@dataclass
class FoundLibrary:
    key: str  # the config key: pg_boss
    library: str  # pg-boss
    schema: str
    default_schema: bool  # the library's default: no `schema:` written
    version: str | None = None  # None: not covered, or not readable (see problem)
    queues: list[str] = field(default_factory=list)
    truncated: bool = False
    problem: str | None = None  # why the item is written as a comment
    unreadable: list[str] = field(default_factory=list)  # relations to GRANT SELECT on

    def item(self) -> dict:
        out: dict = {self.key: "*"}
        if not self.default_schema:
            out["schema"] = self.schema
        return out


def library_kinds() -> list[type[LibraryKind]]:
    kinds = queuekinds.load()
    return [
        k  # type: ignore[misc]
        for key, k in sorted(kinds.items())
        if key in LIBRARY_QUEUES and issubclass(k, LibraryKind)
    ]


def _probe_kind(cls: type[LibraryKind], schema: str) -> LibraryKind:
    """The kind for a `<key>: "*"` item in `schema`, as the collector would make it."""
    model = LIBRARY_QUEUES[cls.key]
    item: dict = {cls.key: "*"}
    if schema != model.default_schema:
        item["schema"] = schema
    target = Target.model_validate({"name": "discover", "dsn": "host=localhost", "queues": [item]})
    return cls(target, target.queues[0])


def _reason(e: BaseException, kind: LibraryKind) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # the probe item's config path means nothing in the output: keep what follows it
    return text.removeprefix(f"{kind.where()}: ")


async def find_libraries(conn: psycopg.AsyncConnection) -> tuple[list[FoundLibrary], set]:
    """The libraries found, and the (schema, table) pairs they own."""
    found: list[FoundLibrary] = []
    claimed: set[tuple[str, str]] = set()
    for cls in library_kinds():
        wanted = sorted(set(cls.detect_tables))
        cur = await conn.execute(
            SCHEMAS_SQL, {"names": wanted, "wanted": len(wanted)}, prepare=False
        )
        for schema, _ in await cur.fetchall():
            for table in {*cls.detect_tables, *cls.owned}:
                claimed.add((schema, table))
            model = LIBRARY_QUEUES[cls.key]
            lib = FoundLibrary(cls.key, cls.library, schema, schema == model.default_schema)
            found.append(lib)
            kind = _probe_kind(cls, schema)
            try:
                async with savepoint(conn):
                    install = await kind.detect(conn)
                    lib.version = install.version
                    problems = {}
                    for rel in kind.tables(install):
                        problem = await _unreadable(conn, rel)
                        if problem is not None:
                            problems[rel] = problem
                    if problems:
                        lib.problem = "; ".join(problems.values())
                        lib.unreadable = [r for r, p in problems.items() if "permission" in p]
                        continue
                    names = sorted(await kind.queue_names(conn, install))
                    lib.truncated = len(names) > NAMES_SHOWN
                    lib.queues = names[:NAMES_SHOWN]
            except QueueConfigError as e:
                lib.problem = _reason(e, kind)
            except psycopg.Error as e:
                if conn.broken or conn.closed:
                    raise
                lib.problem = f"{type(e).__name__}: {_reason(e, kind)}"
    return found, claimed


async def _unreadable(conn: psycopg.AsyncConnection, rel: str) -> str | None:
    cur = await conn.execute(
        "SELECT has_table_privilege(to_regclass(%s), 'SELECT')", (rel,), prepare=False
    )
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return f'table "{rel}" does not exist'
    return None if row[0] else f'permission denied: cannot SELECT from "{rel}"'
