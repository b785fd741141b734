"""Client sessions of the whole server, from pg_stat_activity: by state, application and user,
the configured limits, lock waits, and the age of the oldest query, transaction and
idle-in-transaction session (runbook 002: long-running queries; 000/003/004: connection counts).

max_connections is a server-wide limit, so the sessions of every database count, not only the
target's. The exporter's own sessions (application_name `runbook-exporter`) are left out.

The role needs pg_monitor (pg_read_all_stats): without it PostgreSQL shows other roles'
sessions with a NULL backend_type, state and times, so they would not be counted at all: every
state would read 0 and no query would ever look long. When any row is hidden like that, the
run fails (success 0, logged by the scheduler) with a message naming the privilege to grant;
only the server's limits are still served, every count is not.
"""

from __future__ import annotations

import re

from prometheus_client.core import Metric

from exporter.db import APPLICATION_NAME
from exporter.metrics import spec
from exporter.scheduler import PartialFailure

NAME = "connections"
SRC = "collectors/connections.py"
T = ("target",)

# pg_stat_activity.state values, normalised to label values; always served, 0 when none
STATES = (
    "active",
    "idle",
    "idle_in_transaction",
    "idle_in_transaction_aborted",
    "fastpath_function_call",
    "disabled",
)
OTHER = "other"  # the bucket for applications / users past the configured top N
UNSET = "unset"  # sessions that did not set application_name

# One statement, one pass over pg_stat_activity (the CTE is materialised once). pg_locks is
# only read when some session waits on a heavyweight lock, since reading it takes every lock
# partition. Ages are clamped at 0: a query may start after this statement did.
SQL = """
WITH s AS (
  SELECT a.pid, a.state, a.application_name, a.usename::text AS usename, a.wait_event_type,
         a.query_start, a.xact_start, a.state_change
  FROM pg_stat_activity a
  WHERE a.backend_type = 'client backend'
    AND a.pid <> pg_backend_pid()
    AND a.application_name IS DISTINCT FROM %(self)s
), agg AS (
  SELECT
    count(*) FILTER (WHERE wait_event_type = 'Lock') AS lock_waiting,
    min(query_start) FILTER (WHERE state = 'active') AS oldest_query,
    min(xact_start) FILTER (WHERE state <> 'idle') AS oldest_xact,
    min(state_change) FILTER (
      WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
    ) AS oldest_idle_xact,
    count(*) FILTER (
      WHERE state = 'active' AND query_start < now() - make_interval(secs => %(warn)s)
    ) AS long_warning,
    count(*) FILTER (
      WHERE state = 'active' AND query_start < now() - make_interval(secs => %(crit)s)
    ) AS long_critical
  FROM s
)
SELECT
  (SELECT coalesce(json_object_agg(state, n), '{}')
     FROM (SELECT state, count(*) AS n FROM s WHERE state IS NOT NULL GROUP BY state) x),
  (SELECT coalesce(json_object_agg(app, n), '{}')
     FROM (SELECT coalesce(application_name, '') AS app, count(*) AS n FROM s GROUP BY 1) x),
  (SELECT coalesce(json_object_agg(usr, n), '{}')
     FROM (SELECT coalesce(usename, '') AS usr, count(*) AS n FROM s GROUP BY 1) x),
  current_setting('max_connections')::int,
  current_setting('superuser_reserved_connections')::int
    + coalesce(current_setting('reserved_connections', true)::int, 0),
  agg.lock_waiting,
  {lock_wait_oldest},
  greatest(extract(epoch FROM now() - agg.oldest_query), 0),
  greatest(extract(epoch FROM now() - agg.oldest_xact), 0),
  greatest(extract(epoch FROM now() - agg.oldest_idle_xact), 0),
  agg.long_warning,
  agg.long_critical,
  -- rows the role may not see: without pg_read_all_stats PostgreSQL nulls backend_type,
  -- state and times of other roles' sessions (and of background processes), so they drop
  -- out of s above; every row it shows in full has a backend_type. Same snapshot as s.
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type IS NULL),
  current_user
FROM agg
"""

# pg_locks.waitstart exists from PostgreSQL 14; before that the series is left out
LOCK_WAIT_OLDEST_14 = """CASE WHEN agg.lock_waiting = 0 THEN 0 ELSE (
    SELECT greatest(extract(epoch FROM now() - min(l.waitstart)), 0)
    FROM pg_locks l WHERE NOT l.granted AND l.pid IN (SELECT pid FROM s)) END"""
LOCK_WAIT_OLDEST_OLD = "NULL::numeric"
SQL_14 = SQL.replace("{lock_wait_oldest}", LOCK_WAIT_OLDEST_14)
SQL_OLD = SQL.replace("{lock_wait_oldest}", LOCK_WAIT_OLDEST_OLD)

CONNECTIONS = spec(
    "runbook_pg_connections",
    "gauge",
    "Client sessions of the whole server by state, the exporter's own excluded.",
    ("target", "state"),
    SRC,
)
BY_APPLICATION = spec(
    "runbook_pg_connections_by_application",
    "gauge",
    "Client sessions of the whole server by application_name: the top N, the rest as other.",
    ("target", "application"),
    SRC,
)
BY_USER = spec(
    "runbook_pg_connections_by_user",
    "gauge",
    "Client sessions of the whole server by role: the top N, the rest as other.",
    ("target", "user"),
    SRC,
)
MAX_CONNECTIONS = spec(
    "runbook_pg_max_connections", "gauge", "The server's max_connections setting.", T, SRC
)
RESERVED = spec(
    "runbook_pg_reserved_connections",
    "gauge",
    "Connection slots reserved for superusers and pg_use_reserved_connections roles.",
    T,
    SRC,
)
LOCK_WAITING = spec(
    "runbook_pg_lock_waiting_sessions",
    "gauge",
    "Client sessions waiting on a heavyweight lock (wait_event_type Lock).",
    T,
    SRC,
)
LOCK_WAIT_OLDEST = spec(
    "runbook_pg_lock_wait_oldest_seconds",
    "gauge",
    "How long the longest current lock wait has lasted; 0 when none (PostgreSQL 14+).",
    T,
    SRC,
)
OLDEST_QUERY = spec(
    "runbook_pg_oldest_query_age_seconds",
    "gauge",
    "Run time of the oldest query of an active session; 0 when none.",
    T,
    SRC,
)
OLDEST_XACT = spec(
    "runbook_pg_oldest_transaction_age_seconds",
    "gauge",
    "Age of the oldest open transaction of a non-idle session; 0 when none.",
    T,
    SRC,
)
OLDEST_IDLE_XACT = spec(
    "runbook_pg_idle_in_transaction_oldest_age_seconds",
    "gauge",
    "How long the longest idle-in-transaction session has been idle; 0 when none.",
    T,
    SRC,
)
LONG_QUERIES = spec(
    "runbook_pg_long_running_queries",
    "gauge",
    "Active queries running longer than the target's long_query_warning / long_query_critical.",
    ("target", "severity"),
    SRC,
)


def state_label(state: str) -> str:
    """'idle in transaction (aborted)' -> 'idle_in_transaction_aborted'."""
    return re.sub(r"[^a-z0-9]+", "_", state.lower()).strip("_")


def top_n(counts: dict[str, int], limit: int, empty: str) -> dict[str, int]:
    """Keep the `limit` largest buckets and sum the rest as "other", always served.

    Ties are broken by name so the kept set does not flap between runs. A real value that
    happens to be "other" is added to the bucket rather than served twice.
    """
    merged: dict[str, int] = {}
    for key, n in counts.items():
        label = key or empty
        merged[label] = merged.get(label, 0) + int(n)
    ranked = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
    out: dict[str, int] = {OTHER: 0}
    for i, (label, n) in enumerate(ranked):
        key = label if i < limit else OTHER
        out[key] = out.get(key, 0) + n
    return out


def hidden_message(hidden: int, role: str) -> str:
    return (
        f"pg_stat_activity hides {hidden} sessions from role {role}: grant pg_monitor (or "
        f"pg_read_all_stats) to {role}; session counts, ages, lock waits and long queries "
        "are not served until then"
    )


async def collect(conn, target, settings) -> list[Metric]:
    th = target.thresholds
    cur = await conn.execute(
        SQL_14 if conn.info.server_version >= 140000 else SQL_OLD,
        {
            "self": APPLICATION_NAME,
            "warn": th.long_query_warning,
            "crit": th.long_query_critical,
        },
    )
    (
        by_state,
        by_app,
        by_user,
        max_conn,
        reserved,
        lock_waiting,
        lock_wait_oldest,
        oldest_query,
        oldest_xact,
        oldest_idle_xact,
        long_warning,
        long_critical,
        hidden,
        role,
    ) = await cur.fetchone()
    t = target.name

    states = CONNECTIONS.family()
    counts = dict.fromkeys(STATES, 0)
    for state, n in by_state.items():
        label = state_label(state)
        counts[label] = counts.get(label, 0) + int(n)
    for label, n in counts.items():
        states.add_metric([t, label], n)

    apps = BY_APPLICATION.family()
    for label, n in top_n(by_app, settings.max_applications, UNSET).items():
        apps.add_metric([t, label], n)
    users = BY_USER.family()
    for label, n in top_n(by_user, settings.max_users, UNSET).items():
        users.add_metric([t, label], n)

    long_queries = LONG_QUERIES.family()
    long_queries.add_metric([t, "warning"], long_warning)
    long_queries.add_metric([t, "critical"], long_critical)

    limits = [MAX_CONNECTIONS.one(max_conn, t), RESERVED.one(reserved, t)]
    if hidden:
        # counts without the hidden sessions would read as an idle server: fail loudly
        raise PartialFailure(hidden_message(hidden, role), limits)
    out = [
        states,
        apps,
        users,
        *limits,
        LOCK_WAITING.one(lock_waiting, t),
        OLDEST_QUERY.one(float(oldest_query or 0), t),
        OLDEST_XACT.one(float(oldest_xact or 0), t),
        OLDEST_IDLE_XACT.one(float(oldest_idle_xact or 0), t),
        long_queries,
    ]
    if lock_wait_oldest is not None:
        out.append(LOCK_WAIT_OLDEST.one(float(lock_wait_oldest), t))
    return out
