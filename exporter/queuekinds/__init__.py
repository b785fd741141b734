"""Kinds of job queue the queues collector reads (exporter/collectors/queues.py).

A `queues:` item of the configuration is one kind, picked by its key (config.QUEUE_KINDS):
`table:` (a hand-rolled jobs table, table.py), `pgmq:` (pgmq's queue tables, pgmq.py) or a job
library's preset (`pg_boss:`..., library.py and one module per library). Each
kind is one module here with a `QueueKind` subclass whose `key` is that config key: its catalog
check, its queries, its doctor checks. The kinds measure; the collector turns every kind's
`Reading` into the same metric families, so alerts and dashboards work for all of them.

Adding a kind is one model in config.py added to QUEUE_KINDS and one module here; a library
preset is a LibraryQueue subclass added to LIBRARY_QUEUES and a LibraryKind module
(docs/queues.md, "Library presets", says how). Nothing else lists the kinds
(tests/test_pgmq.py holds the two lists equal).
"""

from __future__ import annotations

import importlib
import pkgutil

from exporter.queuekinds.base import KINDS, QueueKind

_loaded = False


def load() -> dict[str, type[QueueKind]]:
    """Every kind, by its config key (imports the package's modules once)."""
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True
    return dict(KINDS)


def kind_of(item: object) -> type[QueueKind]:
    """The kind class for a configured queue item (its model's `kind`)."""
    key = getattr(type(item), "kind", None)
    kinds = load()
    if key not in kinds:
        raise LookupError(f"no queue kind module for {key!r}")
    return kinds[key]
