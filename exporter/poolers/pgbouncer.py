"""PgBouncer: one scheduler job per configured pooler, reading its admin console.

The admin console (database `pgbouncer`) speaks only the simple query protocol and refuses
BEGIN, so the reader connects in autocommit mode and sends each SHOW without parameters: psycopg
then uses the simple protocol (a parameter, a binary cursor or a prepared statement would switch
to the extended one, which the console answers with "extended query protocol not supported").
A connection per run: the console is cheap to log in to and nothing is held between runs.

Columns differ across PgBouncer versions (maxwait_us since 1.8, cl_active_cancel_req since
1.18, ...), so every row is read by column name and a missing column is left out, never guessed.
The console's own pseudo-database `pgbouncer` is skipped: it has no server connections.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Mapping
from typing import Any

import psycopg
from prometheus_client.core import Metric

from exporter.metrics import ThresholdSeries, spec
from exporter.poolers.config import ADMIN_DATABASE, Pooler, PoolerSecretError
from exporter.scheduler import Job
from exporter.secrets import redact

log = logging.getLogger("exporter.poolers")
SRC = "poolers/pgbouncer.py"
P = ("pooler",)
PD = ("pooler", "database")
PDU = ("pooler", "database", "user")
# why the console could not be read: the fixed set of runbook_pgbouncer_failure_reason
REASONS = ("connect", "auth", "timeout", "query", "password")
US = 1e-6  # the console counts times in microseconds

UP = spec(
    "runbook_pgbouncer_up",
    "gauge",
    "1 when the PgBouncer admin console was read on the last run, else 0 (see "
    "runbook_pgbouncer_failure_reason).",
    P,
    SRC,
)
FAILURE_REASON = spec(
    "runbook_pgbouncer_failure_reason",
    "gauge",
    "1 for the reason the last read of the admin console failed, 0 for the others of the fixed "
    "set (" + ", ".join(REASONS) + "); all 0 when it worked.",
    ("pooler", "reason"),
    SRC,
)
CLIENTS = spec(
    "runbook_pgbouncer_pool_clients",
    "gauge",
    "Client connections of the pool by state (SHOW POOLS cl_*): active (linked to a server or "
    "idle), waiting (queued for a server connection), active_cancel_req, waiting_cancel_req.",
    (*PDU, "state"),
    SRC,
)
SERVERS = spec(
    "runbook_pgbouncer_pool_servers",
    "gauge",
    "Server connections of the pool by state (SHOW POOLS sv_*): active (linked to a client), "
    "idle, used (idle, to be checked before reuse), tested, login, active_cancel, "
    "being_canceled.",
    (*PDU, "state"),
    SRC,
)
MAX_WAIT = spec(
    "runbook_pgbouncer_pool_max_wait_seconds",
    "gauge",
    "How long the oldest waiting client of the pool has waited (SHOW POOLS maxwait + "
    "maxwait_us); 0 when none waits.",
    PDU,
    SRC,
)
POOL_SIZE = spec(
    "runbook_pgbouncer_pool_size",
    "gauge",
    "Server connections the pool may open (SHOW DATABASES pool_size of its database).",
    PDU,
    SRC,
)
SATURATION = spec(
    "runbook_pgbouncer_pool_saturation_ratio",
    "gauge",
    "Server connections in use by clients (sv_active) / pool_size; 1 means every server "
    "connection is busy and the next client queues.",
    PDU,
    SRC,
)
POOL_INFO = spec(
    "runbook_pgbouncer_pool_info",
    "gauge",
    "1 for each pool served, with its pool_mode.",
    (*PDU, "pool_mode"),
    SRC,
)
POOLS_SKIPPED = spec(
    "runbook_pgbouncer_pools_skipped",
    "gauge",
    "Pools left out because the pooler has more than max_pools (the busiest are served).",
    P,
    SRC,
)
XACTS = spec(
    "runbook_pgbouncer_transactions",
    "counter",
    "Transactions pooled for the database (SHOW STATS total_xact_count).",
    PD,
    SRC,
)
QUERIES = spec(
    "runbook_pgbouncer_queries",
    "counter",
    "Queries pooled for the database (SHOW STATS total_query_count).",
    PD,
    SRC,
)
WAIT_TIME = spec(
    "runbook_pgbouncer_client_wait_seconds",
    "counter",
    "Time clients of the database spent waiting for a server connection (SHOW STATS "
    "total_wait_time).",
    PD,
    SRC,
)
XACT_TIME = spec(
    "runbook_pgbouncer_transaction_seconds",
    "counter",
    "Time spent in transactions of the database, idle in transaction included (SHOW STATS "
    "total_xact_time).",
    PD,
    SRC,
)
QUERY_TIME = spec(
    "runbook_pgbouncer_query_seconds",
    "counter",
    "Time spent running queries of the database (SHOW STATS total_query_time).",
    PD,
    SRC,
)
AVG_WAIT = spec(
    "runbook_pgbouncer_avg_wait_seconds",
    "gauge",
    "Average time a client of the database waited for a server connection over PgBouncer's "
    "last stats period (SHOW STATS avg_wait_time).",
    PD,
    SRC,
)
DB_SETTING = spec(
    "runbook_pgbouncer_database_setting",
    "gauge",
    "A database's settings and state (SHOW DATABASES): pool_size, min_pool_size, "
    "reserve_pool, max_connections (0: no limit), current_connections, paused, disabled.",
    (*PD, "setting"),
    SRC,
)
LISTS = spec(
    "runbook_pgbouncer_list_items",
    "gauge",
    "Entries of PgBouncer's internal lists (SHOW LISTS): databases, users, pools, "
    "used_clients, free_clients, login_clients, used_servers, free_servers, ...",
    ("pooler", "list"),
    SRC,
)
MAX_CLIENT_CONN = spec(
    "runbook_pgbouncer_max_client_connections",
    "gauge",
    "max_client_conn from SHOW CONFIG: client connections PgBouncer accepts in all.",
    P,
    SRC,
)
DEFAULT_POOL_SIZE = spec(
    "runbook_pgbouncer_default_pool_size",
    "gauge",
    "default_pool_size from SHOW CONFIG.",
    P,
    SRC,
)
MAX_WAIT_THRESHOLD = spec(
    "runbook_pgbouncer_max_wait_threshold_seconds",
    "gauge",
    "Wait of the oldest waiting client above which PgBouncerClientsWaiting fires.",
    ("pooler", "severity"),
    SRC,
)
SATURATION_THRESHOLD = spec(
    "runbook_pgbouncer_saturation_threshold_ratio",
    "gauge",
    "Pool saturation above which PgBouncerPoolSaturated fires.",
    ("pooler", "severity"),
    SRC,
)
THRESHOLD_FIELDS = {
    "max_wait_warning": (MAX_WAIT_THRESHOLD, "warning"),
    "max_wait_critical": (MAX_WAIT_THRESHOLD, "critical"),
    "saturation_warning": (SATURATION_THRESHOLD, "warning"),
    "saturation_critical": (SATURATION_THRESHOLD, "critical"),
}

CLIENT_STATES = ("active", "waiting", "active_cancel_req", "waiting_cancel_req")
SERVER_STATES = ("active", "idle", "used", "tested", "login", "active_cancel", "being_canceled")
STATS = (  # SHOW STATS column -> spec, scale
    ("total_xact_count", XACTS, 1.0),
    ("total_query_count", QUERIES, 1.0),
    ("total_wait_time", WAIT_TIME, US),
    ("total_xact_time", XACT_TIME, US),
    ("total_query_time", QUERY_TIME, US),
    ("avg_wait_time", AVG_WAIT, US),
)
DB_SETTINGS = (
    "pool_size",
    "min_pool_size",
    "reserve_pool",
    "max_connections",
    "current_connections",
    "paused",
    "disabled",
)
Row = Mapping[str, Any]


class ConsoleFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def number(row: Row, column: str) -> float | None:
    """A numeric column of a console row, None when this version has no such column."""
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


async def show(conn: psycopg.AsyncConnection, what: str) -> list[dict[str, Any]]:
    """Rows of `SHOW <what>` as dicts by column name (simple query protocol: no parameters)."""
    cur = await conn.execute(f"SHOW {what}")
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


def _why_connect(e: psycopg.Error) -> ConsoleFailure:
    text = str(e)
    said = text.rsplit("FATAL:", 1)[-1].strip() if "FATAL:" in text else text
    auth_words = ("password", "authentication", "not allowed", "no such user", "SASL")
    reason = "auth" if any(w in said for w in auth_words) else "connect"
    return ConsoleFailure(reason, redact(said.splitlines()[0] if said else type(e).__name__))


async def read_console(conninfo: str, timeout: float) -> dict[str, list[dict[str, Any]]]:
    """SHOW POOLS, STATS, DATABASES, LISTS and CONFIG in one admin-console session."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            conninfo,
            autocommit=True,  # the console refuses BEGIN
            prepare_threshold=None,  # and prepared statements
            connect_timeout=max(1, int(timeout)),
            application_name="runbook-exporter",
        )
    except psycopg.Error as e:
        raise _why_connect(e) from None
    try:
        out = {}
        for what in ("POOLS", "STATS", "DATABASES", "LISTS", "CONFIG"):
            try:
                out[what] = await show(conn, what)
            except psycopg.Error as e:
                raise ConsoleFailure("query", redact(f"SHOW {what}: {e}")) from None
        return out
    finally:
        await conn.close()


def _pool_order(row: Row) -> tuple[float, float, str, str]:
    return (
        -(number(row, "cl_waiting") or 0),
        -(number(row, "cl_active") or 0),
        str(row.get("database")),
        str(row.get("user")),
    )


def families(name: str, shown: Mapping[str, list[dict[str, Any]]], max_pools: int) -> list[Metric]:
    """The metrics of one reading of the console (a pure function of the SHOW rows)."""
    dbs = {
        str(r.get("name")): r for r in shown.get("DATABASES", []) if r.get("name") != ADMIN_DATABASE
    }
    pools = sorted(
        (r for r in shown.get("POOLS", []) if r.get("database") != ADMIN_DATABASE),
        key=_pool_order,
    )
    served, skipped = pools[:max_pools], max(len(pools) - max_pools, 0)
    clients, servers = CLIENTS.family(), SERVERS.family()
    max_wait, size, saturation, info = (
        MAX_WAIT.family(),
        POOL_SIZE.family(),
        SATURATION.family(),
        POOL_INFO.family(),
    )
    for r in served:
        labels = [name, str(r.get("database")), str(r.get("user"))]
        for state in CLIENT_STATES:
            if (v := number(r, f"cl_{state}")) is not None:
                clients.add_metric([*labels, state], v)
        for state in SERVER_STATES:
            if (v := number(r, f"sv_{state}")) is not None:
                servers.add_metric([*labels, state], v)
        wait = number(r, "maxwait")
        if wait is not None:
            max_wait.add_metric(labels, wait + (number(r, "maxwait_us") or 0) * US)
        info.add_metric([*labels, str(r.get("pool_mode") or "")], 1)
        pool_size = number(dbs.get(labels[1], {}), "pool_size")
        if pool_size is not None:
            size.add_metric(labels, pool_size)
            active = number(r, "sv_active")
            if pool_size > 0 and active is not None:
                saturation.add_metric(labels, active / pool_size)
    fams: list[Metric] = [clients, servers, max_wait, size, saturation, info]
    fams.append(POOLS_SKIPPED.one(skipped, name))
    stats = {s: s.family() for _, s, _ in STATS}
    for r in shown.get("STATS", []):
        db = str(r.get("database"))
        if db == ADMIN_DATABASE:
            continue
        for column, s, scale in STATS:
            if (v := number(r, column)) is not None:
                stats[s].add_metric([name, db], v * scale)
    fams += stats.values()
    settings = DB_SETTING.family()
    for db, r in sorted(dbs.items())[:max_pools]:
        for setting in DB_SETTINGS:
            if (v := number(r, setting)) is not None:
                settings.add_metric([name, db, setting], v)
    fams.append(settings)
    lists = LISTS.family()
    for r in shown.get("LISTS", []):
        if (v := number(r, "items")) is not None and r.get("list"):
            lists.add_metric([name, str(r["list"])], v)
    fams.append(lists)
    config = {str(r.get("key")): r.get("value") for r in shown.get("CONFIG", [])}
    for key, s in (("max_client_conn", MAX_CLIENT_CONN), ("default_pool_size", DEFAULT_POOL_SIZE)):
        if (v := number(config, key)) is not None:
            fams.append(s.one(v, name))
    return [f for f in fams if f.samples]


class Reader:
    """One pooler's job state: the last failure reason, so only changes are logged."""

    def __init__(self, pooler: Pooler) -> None:
        self.pooler = pooler
        self.last_reason: str | None = "never"

    async def run(self) -> list[Metric]:
        p = self.pooler
        try:
            conninfo = p.conninfo()
            shown = await asyncio.wait_for(read_console(conninfo, p.timeout), p.timeout)
        except PoolerSecretError as e:
            return self._failed("password", str(e))
        except ConsoleFailure as e:
            return self._failed(e.reason, str(e))
        except TimeoutError:
            return self._failed("timeout", f"no answer within {p.timeout:g}s")
        except (psycopg.Error, OSError) as e:
            return self._failed("connect", redact(f"{type(e).__name__}: {e}")[:300])
        if self.last_reason not in (None, "never"):
            log.info("pooler console readable again", extra={"pooler": p.name})
        self.last_reason = None
        return [*self._status(None), *families(p.name, shown, p.max_pools)]

    def failed_run(self, error: str) -> list[Metric]:
        """The run raised or was cut by the scheduler: down, not vanished."""
        return self._failed("timeout" if error.startswith("timed out") else "query", error)

    def _failed(self, reason: str, error: str) -> list[Metric]:
        if reason != self.last_reason:
            log.warning(
                "pooler console unreadable",
                extra={"pooler": self.pooler.name, "reason": reason, "error": redact(error)},
            )
            self.last_reason = reason
        return self._status(reason)

    def _status(self, reason: str | None) -> list[Metric]:
        name = self.pooler.name
        reasons = FAILURE_REASON.family()
        for r in REASONS:
            reasons.add_metric([name, r], 1 if r == reason else 0)
        return [UP.one(0 if reason else 1, name), reasons]


class PoolerJob(Job):
    @property
    def kind(self) -> str:  # what the scheduler's log lines call it
        return "pooler"


def job_key(name: str) -> tuple[str, str]:
    # a space cannot occur in a target or app name (LabelValue), so no key collides
    return ("pooler console", name)


def pooler_job(pooler: Pooler) -> Job:
    reader = Reader(pooler)
    return PoolerJob(
        key=job_key(pooler.name),
        interval=pooler.interval,
        timeout=pooler.timeout + 1.0,  # the reader bounds itself; this is the safety net
        run=reader.run,
        first_delay=zlib.crc32(f"pooler/{pooler.name}".encode()) / 2**32 * pooler.interval,
        self_metrics=False,
        on_error=reader.failed_run,
    )


def threshold_families(poolers: list[Pooler]) -> list[Metric]:
    series = ThresholdSeries(THRESHOLD_FIELDS)
    for p in poolers:
        series.add(p.thresholds, THRESHOLD_FIELDS, p.name)
    return series.families()
