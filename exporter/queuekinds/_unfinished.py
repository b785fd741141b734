"""Presets of libraries whose job table holds unfinished jobs only (graphile-worker deletes a
job when it completes, pgqueuer moves it to its log): their state query reads that table
whole, which is O(active jobs) by the library's design. No index bounds such a read and none
is needed, so the doctor does not EXPLAIN it for one (`LibraryKind.reads_whole`: it would
report a missing index that no version of the library creates); it says how many jobs the read
covers instead."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg

from exporter.queuekinds.base import QueueConfigError
from exporter.queuekinds.library import LibraryKind

if TYPE_CHECKING:
    from exporter.doctor import Report


class UnfinishedOnlyKind(LibraryKind):
    """A preset whose state query reads a table of unfinished jobs whole (not checked for an
    index), and whose `unfinished_note` says how many jobs that is."""

    reads_whole = ("state",)

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
