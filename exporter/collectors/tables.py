"""tables collector: being written."""

from __future__ import annotations

NAME = "tables"


async def collect(conn, target, settings):
    raise NotImplementedError("the tables collector is not written yet")
