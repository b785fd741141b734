"""queues collector: being written."""

from __future__ import annotations

NAME = "queues"


async def collect(conn, target, settings):
    raise NotImplementedError("the queues collector is not written yet")
