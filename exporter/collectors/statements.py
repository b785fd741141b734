"""statements collector: being written."""

from __future__ import annotations

NAME = "statements"


async def collect(conn, target, settings):
    raise NotImplementedError("the statements collector is not written yet")
