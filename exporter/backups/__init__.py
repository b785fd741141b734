"""Verified backups (runbooks 002 and 003): the last successful backup's time and size, read
from one source per configured backup.

A `backups:` item of the configuration (exporter/backups/config.py) names one source kind by
its key; each kind is one module here with a `BackupSource` subclass whose `key` is that config
key (files.py, sql.py, pgbackrest.py, walg.py, supabase.py). The kinds read; runner.py turns
every kind's `Reading` into the same metric families and makes the scheduler's jobs, so the
alerts (alerts/backups.rules.yml) and dashboards work for all of them.

Adding a kind is one model in config.py's SOURCE_KINDS and one module here; nothing else lists
the kinds (tests/test_backups.py holds the two lists equal).
"""

from __future__ import annotations

import importlib
import pkgutil

from exporter.backups.base import KINDS, BackupSource

_loaded = False


def load() -> dict[str, type[BackupSource]]:
    """Every kind, by its config key (imports the package's modules once)."""
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True
    return dict(KINDS)
