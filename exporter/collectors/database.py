"""pg_stat_database of the target's database: transactions, deadlocks, conflicts, size, and
(PostgreSQL 14+) its sessions and how they ended; the server's checkpoints, timed and requested.

The columns differ by major, so the statement is chosen by the server version the connection
reported at startup (no query, no trial and error): the session counts exist from 14 and are
absent before it (not 0); the checkpoint counts moved from pg_stat_bgwriter (checkpoints_timed,
checkpoints_req) to pg_stat_checkpointer (num_timed, num_requested) in 17.
"""

from __future__ import annotations

from prometheus_client.core import Metric

from exporter.metrics import spec
from exporter.sources import Collector

SRC = "collectors/database.py"

SQL = """
SELECT xact_commit, xact_rollback, deadlocks, conflicts,
       pg_database_size(datid) AS size_bytes,
       {checkpoints},
       {sessions}
FROM pg_stat_database
WHERE datname = current_database()
"""
CHECKPOINTS_17 = "(SELECT json_build_array(num_timed, num_requested) FROM pg_stat_checkpointer)"
CHECKPOINTS_OLD = (
    "(SELECT json_build_array(checkpoints_timed, checkpoints_req) FROM pg_stat_bgwriter)"
)
SESSIONS_14 = "json_build_array(sessions, sessions_abandoned, sessions_fatal, sessions_killed)"
SESSIONS_OLD = "NULL::json"
# how a session can end other than by the client's Terminate message (pg_stat_database)
SESSION_ENDS = ("abandoned", "fatal", "killed")


def database_sql(server_version: int) -> str:
    """The statement for a server of this version (server_version_num, e.g. 170004)."""
    return SQL.format(
        checkpoints=CHECKPOINTS_17 if server_version >= 170000 else CHECKPOINTS_OLD,
        sessions=SESSIONS_14 if server_version >= 140000 else SESSIONS_OLD,
    )


COMMITS = spec(
    "runbook_pg_xact_commit",
    "counter",
    "Transactions committed in the target database.",
    ("target",),
    SRC,
)
ROLLBACKS = spec(
    "runbook_pg_xact_rollback",
    "counter",
    "Transactions rolled back in the target database (errors and explicit rollbacks).",
    ("target",),
    SRC,
)
DEADLOCKS = spec(
    "runbook_pg_deadlocks",
    "counter",
    "Deadlocks detected in the target database.",
    ("target",),
    SRC,
)
CONFLICTS = spec(
    "runbook_pg_conflicts",
    "counter",
    "Queries cancelled by recovery conflicts (standbys only).",
    ("target",),
    SRC,
)
SIZE = spec(
    "runbook_pg_database_size_bytes",
    "gauge",
    "Disk space used by the target database.",
    ("target",),
    SRC,
)

CHECKPOINTS = spec(
    "runbook_pg_checkpoints",
    "counter",
    "Checkpoints of the server by kind: timed (checkpoint_timeout) or requested (max_wal_size "
    "reached, CHECKPOINT, shutdown); many requested ones mean max_wal_size is too small.",
    ("target", "kind"),
    SRC,
)
SESSIONS = spec(
    "runbook_pg_sessions",
    "counter",
    "Sessions established to the target database (PostgreSQL 14+; absent before).",
    ("target",),
    SRC,
)
SESSIONS_ENDED = spec(
    "runbook_pg_sessions_ended_abnormally",
    "counter",
    "Sessions of the target database that ended other than by the client closing them: "
    "abandoned (the client went away), fatal, killed (PostgreSQL 14+; absent before).",
    ("target", "reason"),
    SRC,
)


class Database(Collector):
    name = "database"
    first_run = 20

    async def collect(self, conn) -> list[Metric]:
        cur = await conn.execute(database_sql(conn.info.server_version))
        commit, rollback, deadlocks, conflicts, size, checkpoints, sessions = await cur.fetchone()
        t = self.target.name
        out = [
            COMMITS.one(commit, t),
            ROLLBACKS.one(rollback, t),
            DEADLOCKS.one(deadlocks, t),
            CONFLICTS.one(conflicts, t),
            SIZE.one(size, t),
        ]
        kinds = CHECKPOINTS.family()
        for kind, n in zip(("timed", "requested"), checkpoints, strict=True):
            kinds.add_metric([t, kind], n)
        out.append(kinds)
        if sessions is not None:
            established, *ends = sessions
            ended = SESSIONS_ENDED.family()
            for reason, n in zip(SESSION_ENDS, ends, strict=True):
                ended.add_metric([t, reason], n)
            out += [SESSIONS.one(established, t), ended]
        return out
