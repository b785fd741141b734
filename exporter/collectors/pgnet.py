"""pg_net (Supabase's asynchronous HTTP from SQL): how the calls the database made recently
ended, and how many wait to be sent.

`net.http_post(...)` only queues a request (a row of `net.http_request_queue`) and returns its
id; pg_net's background worker sends it later, deletes it from the queue and writes the outcome
to `net._http_response`. So a pg_cron job that calls a webhook "succeeds" as soon as the
request is queued, whatever the webhook answers: the real result -- a 401 from an expired key,
a 404 from a renamed Edge Function -- is only in `net._http_response`, until pg_net's TTL
(`pg_net.ttl`, 6 hours by default) deletes it. This collector counts those responses.

How pg_net writes a response (pg_net 0.20, src/core.c): the request completed at the HTTP
level -> `status_code` set, `timed_out` false, `error_msg` NULL; the request timed out ->
`status_code` NULL, `timed_out` true, `error_msg` "Timeout of N ms reached..."; any other
failure (DNS, connection refused, TLS) -> `status_code` NULL, `timed_out` false, `error_msg`
curl's message. The outcome label follows that: timed_out, error, or the status class.

Cost: the window count is a range scan of the index pg_net creates on
`net._http_response (created)`, so it reads the responses of the window, not the table (doctor
says when that index is missing). The request queue is a queue -- the worker empties it every
few milliseconds while it runs -- so counting it is O(queue), and the count stops at
`max_queue_count` so a stopped worker with millions of requests queued cannot make it
expensive. Nothing of a request or response other than its status, timing and whether it
carries an error is read: URLs, headers and bodies (which hold API keys and user data) never
reach a label, a log line or an error message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from pydantic import Field, model_validator

from exporter.configtypes import Duration, Model, Ratio, ordered_pair
from exporter.metrics import Fields, ThresholdSeries, spec
from exporter.sources import Collector, CollectorSettings

if TYPE_CHECKING:
    from exporter.doctor import Report

SRC = "collectors/pgnet.py"
T = ("target",)
TS = ("target", "severity")

# the outcomes of a response, each always served (0 when none) so ratios need no `or on()`
OUTCOMES = ("2xx", "3xx", "4xx", "5xx", "other", "timed_out", "error")
# the outcomes the alerts count as failed calls (3xx is not: pg_net does not follow
# redirects, and a redirect is an answer from the server; docs/runbooks/PgNetCallsFailing.md)
FAILED = ("4xx", "5xx", "timed_out", "error")

AVAILABLE = spec(
    "runbook_pgnet_available",
    "gauge",
    "1 when pg_net's tables (net._http_response, net.http_request_queue) exist in the target "
    "database, 0 when pg_net is not installed (no other pg_net series then).",
    T,
    SRC,
)
RECENT = spec(
    "runbook_pgnet_recent_responses",
    "gauge",
    "pg_net responses written within the collector's window, by outcome: the status class "
    "(2xx, 3xx, 4xx, 5xx; other for a status outside 200-599), timed_out, or error (no HTTP "
    "status: DNS, connection or TLS failure).",
    ("target", "outcome"),
    SRC,
)
QUEUE_DEPTH = spec(
    "runbook_pgnet_request_queue_depth",
    "gauge",
    "Requests waiting in net.http_request_queue for pg_net's worker (counted up to the "
    "collector's max_queue_count).",
    T,
    SRC,
)
RATIO_THRESHOLD = spec(
    "runbook_pgnet_failure_ratio_threshold",
    "gauge",
    "Share of pg_net responses in the window that failed (4xx, 5xx, timed out, error) above "
    "which to alert.",
    TS,
    SRC,
)
FAILURES_THRESHOLD = spec(
    "runbook_pgnet_failures_threshold",
    "gauge",
    "Failed pg_net responses in the window above which to alert.",
    TS,
    SRC,
)
MIN_RESPONSES = spec(
    "runbook_pgnet_min_responses",
    "gauge",
    "Fewer pg_net responses in the window than this are not alerted on by ratio.",
    T,
    SRC,
)
WINDOW = spec(
    "runbook_pgnet_window_seconds",
    "gauge",
    "Window of runbook_pgnet_recent_responses.",
    T,
    SRC,
)

# pg_net's two tables, whether the role may read them, and the role's name for the GRANT
TABLES_SQL = """
SELECT c.relname::text,
       has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'),
       quote_ident(current_user)
FROM pg_namespace n
JOIN pg_class c ON c.relnamespace = n.oid
WHERE n.nspname = 'net' AND c.relname IN ('_http_response', 'http_request_queue')
"""
# a range scan of pg_net's index on `created`: the window's rows only
RESPONSES_SQL = """
SELECT CASE
         WHEN timed_out THEN 'timed_out'
         WHEN status_code IS NULL THEN 'error'
         WHEN status_code BETWEEN 200 AND 599 THEN (status_code / 100)::text || 'xx'
         ELSE 'other'
       END AS outcome,
       count(*)
FROM net._http_response
WHERE created > now() - make_interval(secs => %(window)s)
GROUP BY 1
"""
QUEUE_SQL = """
SELECT count(*) FROM (SELECT 1 FROM net.http_request_queue LIMIT %(cap)s) AS queued
"""
# an index whose first column is `created` (pg_net creates one; a dropped one makes every
# window count a full scan)
CREATED_INDEX_SQL = """
SELECT EXISTS (
  SELECT 1 FROM pg_index x
  JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
  WHERE x.indrelid = 'net._http_response'::regclass AND a.attname = 'created' AND x.indisvalid
), (SELECT extversion FROM pg_extension WHERE extname = 'pg_net'),
   current_setting('pg_net.ttl', true)
"""
TABLES = ("_http_response", "http_request_queue")


class PgNetUnreadable(Exception):
    """pg_net is installed but the role cannot read its tables; the message says what to grant."""


class PgNetThresholds(Model):
    # ours: a webhook that fails 1 call in 20 needs a look, 1 in 4 is broken
    failure_ratio_warning: Ratio = 0.05
    failure_ratio_critical: Ratio = 0.25
    # any failed call: the calls pg_net makes are mostly few (cron-driven webhooks), and one
    # 401 or 404 there is a broken integration nobody else reports; raise it for busy ones
    failures_warning: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> PgNetThresholds:
        ordered_pair(self, "failure_ratio_warning", "failure_ratio_critical")
        return self


class PgNetSettings(CollectorSettings):
    # responses written this long ago or less are counted (pg_net keeps them pg_net.ttl)
    window: Duration = Field(600.0, ge=10.0, le=86400.0)
    min_responses: int = Field(20, ge=1)  # the ratio alerts need this many in the window
    max_queue_count: int = Field(100_000, ge=1, le=100_000_000)
    thresholds: PgNetThresholds = PgNetThresholds()


THRESHOLDS: Fields = {
    "failure_ratio_warning": (RATIO_THRESHOLD, "warning"),
    "failure_ratio_critical": (RATIO_THRESHOLD, "critical"),
    "failures_warning": (FAILURES_THRESHOLD, "warning"),
}
SETTINGS: Fields = {
    "window": (WINDOW, None),
    "min_responses": (MIN_RESPONSES, None),
}


def grant_statements(role: str, schema_usage: bool = True) -> str:
    """What pg_net's tables' owner (on Supabase: run it as `postgres`) grants the role."""
    lines = [f"GRANT USAGE ON SCHEMA net TO {role};"] if schema_usage else []
    lines.append(f"GRANT SELECT ON net._http_response, net.http_request_queue TO {role};")
    return "\n".join(lines)


class PgNet(Collector):
    name = "pgnet"
    Settings = PgNetSettings
    first_run = 60

    async def _tables(self, conn) -> tuple[dict[str, bool], str]:
        """{table: readable} of pg_net's tables found, and the role's quoted name."""
        cur = await conn.execute(TABLES_SQL)
        rows = await cur.fetchall()
        role = rows[0][2] if rows else ""
        return {name: readable for name, readable, _ in rows}, role

    async def collect(self, conn) -> list[Metric]:
        t = self.target.name
        found, role = await self._tables(conn)
        if not found:  # pg_net is not installed here: nothing to measure, nothing wrong
            return [AVAILABLE.one(0, t)]
        missing = [name for name in TABLES if name not in found]
        if missing:
            raise PgNetUnreadable(
                "schema net has "
                + ", ".join(f"net.{n}" for n in found)
                + " but not "
                + ", ".join(f"net.{n}" for n in missing)
                + ": not the tables of a pg_net this exporter knows (0.5 or later)"
            )
        unreadable = [name for name, readable in found.items() if not readable]
        if unreadable:
            raise PgNetUnreadable(
                f"role {role} cannot read "
                + ", ".join(f"net.{n}" for n in sorted(unreadable))
                + "; as their owner run: "
                + grant_statements(role).replace("\n", " ")
                + " (deploy/sql/supabase-monitoring-role.sql grants it)"
            )

        settings = self.settings
        cur = await conn.execute(RESPONSES_SQL, {"window": settings.window})
        counts = dict.fromkeys(OUTCOMES, 0)
        for outcome, n in await cur.fetchall():
            counts[outcome] += n
        cur = await conn.execute(QUEUE_SQL, {"cap": settings.max_queue_count})
        (depth,) = await cur.fetchone()

        recent = RECENT.family()
        for outcome, n in counts.items():
            recent.add_metric([t, outcome], n)
        series = ThresholdSeries(THRESHOLDS, SETTINGS)
        series.add(settings.thresholds, THRESHOLDS, t)
        series.add(settings, SETTINGS, t)
        return [
            AVAILABLE.one(1, t),
            recent,
            QUEUE_DEPTH.one(depth, t),
            *series.families(),
        ]

    async def doctor(self, conn, report: Report) -> None:
        """Is pg_net there, can the role read its tables, does the window count use the index?"""
        report_problem = report.finding if self.settings.enabled else report.note
        found, role = await self._tables(conn)
        if not found:
            report.note("pg_net is not installed in this database (no net._http_response)")
            return
        unreadable = sorted(n for n, readable in found.items() if not readable)
        if unreadable:
            report_problem(
                "pg_net: the role cannot read " + ", ".join(f"net.{n}" for n in unreadable),
                fix=grant_statements(role),
            )
            return
        if len(found) < len(TABLES):
            report_problem("pg_net: net._http_response or net.http_request_queue is missing")
            return
        cur = await conn.execute(CREATED_INDEX_SQL)
        indexed, version, ttl = await cur.fetchone()
        report.ok(f"pg_net {version or '(version unknown)'}: the role can read its tables")
        if not indexed:
            report_problem(
                "pg_net: no index on net._http_response (created): each window count reads "
                "the whole table",
                fix="CREATE INDEX ON net._http_response (created);  -- as the table's owner",
            )
        if ttl:
            report.note(
                f"pg_net keeps responses for pg_net.ttl = {ttl}; the collector counts the "
                f"last {self.settings.window:g}s"
            )
