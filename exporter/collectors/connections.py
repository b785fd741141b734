"""connections collector: being written."""

from __future__ import annotations

NAME = "connections"


async def collect(conn, target, settings):
    raise NotImplementedError("the connections collector is not written yet")
