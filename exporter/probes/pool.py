"""The app's own connection pool, read from its health JSON.

Presets map the common shapes to one set of gauges, so runbook 001's exhaustion rule is one
comparison: `runbook_app_pool_in_use >= runbook_app_pool_size + runbook_app_pool_max_overflow`.

- sqlalchemy: QueuePool status fields pool_size, checked_out, checked_in, overflow,
  max_overflow. SQLAlchemy's overflow() is negative until the pool has opened pool_size
  connections; the gauge is clamped at 0 (connections beyond pool_size).
- node_postgres: pg.Pool's totalCount, idleCount, waitingCount (and `max`, the pool size, when
  the app reports it); in use = totalCount - idleCount.
"""

from __future__ import annotations

from typing import Any

import jmespath
from prometheus_client.core import Metric

from exporter.metrics import MetricSpec, spec
from exporter.probes.config import POOL_FIELDS, Pool
from exporter.probes.healthjson import number

SRC = "probes/pool.py"
AE = ("app", "endpoint")
SIZE = spec(
    "runbook_app_pool_size",
    "gauge",
    "Configured size of the app's connection pool (SQLAlchemy pool_size, node-postgres max).",
    AE,
    SRC,
)
IN_USE = spec(
    "runbook_app_pool_in_use",
    "gauge",
    "Connections of the app's pool checked out / in use.",
    AE,
    SRC,
)
IDLE = spec("runbook_app_pool_idle", "gauge", "Idle connections in the app's pool.", AE, SRC)
WAITING = spec(
    "runbook_app_pool_waiting",
    "gauge",
    "Requests waiting for a connection of the app's pool.",
    AE,
    SRC,
)
OVERFLOW = spec(
    "runbook_app_pool_overflow",
    "gauge",
    "Connections open beyond the pool size (SQLAlchemy overflow, clamped at 0).",
    AE,
    SRC,
)
MAX_OVERFLOW = spec(
    "runbook_app_pool_max_overflow",
    "gauge",
    "Connections the app's pool may open beyond its size (SQLAlchemy max_overflow).",
    AE,
    SRC,
)
GAUGES: dict[str, MetricSpec] = {
    "size": SIZE,
    "in_use": IN_USE,
    "idle": IDLE,
    "waiting": WAITING,
    "overflow": OVERFLOW,
    "max_overflow": MAX_OVERFLOW,
}
PRESETS: dict[str, dict[str, str]] = {
    "sqlalchemy": {
        "size": "pool_size",
        "in_use": "checked_out",
        "idle": "checked_in",
        "overflow": "overflow",
        "max_overflow": "max_overflow",
    },
    "node_postgres": {
        "total": "totalCount",
        "idle": "idleCount",
        "waiting": "waitingCount",
        "size": "max",
    },
}


class PoolReader:
    def __init__(self, cfg: Pool) -> None:
        paths = dict(PRESETS.get(cfg.preset or "", {}))
        for f in POOL_FIELDS:
            if getattr(cfg, f) is not None:
                paths[f] = getattr(cfg, f)
        self.path = jmespath.compile(cfg.path)
        self.fields = {f: jmespath.compile(p) for f, p in paths.items()}

    def read(self, doc: Any) -> dict[str, float]:
        node = self.path.search(doc)
        if node is None:
            return {}
        values: dict[str, float] = {}
        for f, expr in self.fields.items():
            v = number(expr.search(node))
            if v is not None:
                values[f] = v
        if "in_use" not in values and "total" in values and "idle" in values:
            values["in_use"] = max(0.0, values["total"] - values["idle"])
        if "overflow" in values:
            values["overflow"] = max(0.0, values["overflow"])
        values.pop("total", None)
        return values

    def families(self, doc: Any, app: str, endpoint: str) -> list[Metric]:
        return [GAUGES[f].one(v, app, endpoint) for f, v in self.read(doc).items()]
