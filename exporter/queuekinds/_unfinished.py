"""Presets of libraries whose job table holds unfinished jobs only (graphile-worker deletes a
job when it completes, pgqueuer moves it to its log): their state query reads that table
whole, which is O(active jobs) by the library's design. No index bounds such a read and none
is needed, so the doctor does not EXPLAIN it for one (it would report a missing index that no
version of the library creates); it says how many jobs the read covers instead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from exporter.queuekinds.base import Query, QueueConfigError
from exporter.queuekinds.library import LibraryKind, LibraryQueries

if TYPE_CHECKING:
    from exporter.doctor import Report


@dataclass(frozen=True)
class UnfinishedOnlyQueries(LibraryQueries):
    def bounded(self) -> list[Query]:
        """Only the recent query must be bounded by an index: the state query reads a table
        of unfinished jobs whole."""
        return [self.recent] if self.recent is not None else []


class UnfinishedOnlyKind(LibraryKind):
    """A preset whose `queries` returns UnfinishedOnlyQueries and whose `unfinished_note`
    says what the state query reads."""

    async def unfinished_note(self, conn: psycopg.AsyncConnection) -> str:
        raise NotImplementedError

    async def doctor(self, conn: psycopg.AsyncConnection, report: Report) -> None:
        await super().doctor(conn, report)
        try:
            install = await self.detect(conn)
        except QueueConfigError:
            return  # reported above
        if await self._check_tables(install, conn):
            return  # reported above
        report.ok(await self.unfinished_note(conn), indent=2)
