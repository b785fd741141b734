"""pg_cron jobs of the target database: per job the newest runs' outcome, how long the current
run has lasted, how late the job is against its schedule, and the size of the run history
(`cron.job_run_details`, which pg_cron never purges by itself: runbook 001's retention check).

Cost. pg_cron ships only the `runid` primary key on cron.job_run_details. Each job's newest
`lookback` runs are read per job (LATERAL, LIMIT lookback). With an index on (jobid, runid) a
run reads at most max_jobs x lookback index entries whatever the history holds; without it
each job walks the primary key backwards until it has found its runs, which for a job that has
not run for a while is the whole history. `doctor` prints the CREATE INDEX CONCURRENTLY
(bench/cron_history.py measures both at a million runs: docs/cron.md).
The history size is the planner's estimate (pg_class.reltuples) and the table's size on disk:
O(1), never a count.

Row-level security. pg_cron enables RLS on cron.job and cron.job_run_details with a policy
`username = current_user` (Supabase keeps it): a monitoring role sees only its own jobs, i.e.
none. When RLS is active for the exporter's role, the collector reads through the SECURITY
DEFINER functions runbook_exporter.cron_jobs() and runbook_exporter.cron_job_runs(bigint[],
integer) that deploy/sql/supabase-monitoring-role.sql creates (no command text, no return
message: a command may hold a token); without them the run fails naming that script.

Quiet without pg_cron: no cron schema, no series, the run succeeds.

Schedules are parsed with cronsim (see `next_fire`) to serve how overdue a job is; the last
run is the newest run of the `lookback` read, so counts are capped at `lookback` (documented
on each metric).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from prometheus_client.core import Metric
from pydantic import Field

from exporter.configtypes import Duration, Model
from exporter.metrics import Fields, ThresholdSeries, spec
from exporter.scheduler import PartialFailure
from exporter.sources import Collector, CollectorSettings

SRC = "collectors/cron.py"
T = ("target",)
# `jobname`, not `job`: Prometheus sets `job` on every scraped series (the scrape job), so an
# exported `job` label would be renamed to `exported_job`
J = ("target", "jobname")
JS = ("target", "jobname", "severity")

log = logging.getLogger("exporter.collectors.cron")

ROLE_SCRIPT = "deploy/sql/supabase-monitoring-role.sql"
FUNCTION_SCHEMA = "runbook_exporter"
FUNCTIONS = {  # name -> its signature, as GRANT and the doctor name it
    "cron_jobs": "runbook_exporter.cron_jobs()",
    "cron_job_runs": "runbook_exporter.cron_job_runs(bigint[], integer)",
}
INDEX_STATEMENT = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS job_run_details_jobid_runid_idx\n"
    "    ON cron.job_run_details (jobid, runid);"
)
FINISHED = ("succeeded", "failed")  # the other statuses (starting, running, ...) are in progress

# the doctor's index, or another valid one leading with (jobid, runid): its name or NULL
INDEX_NAME = """(SELECT c.relname::text FROM pg_index i
   JOIN pg_class c ON c.oid = i.indexrelid
   JOIN pg_class t ON t.oid = i.indrelid
   JOIN pg_namespace n ON n.oid = t.relnamespace
   JOIN pg_attribute a1 ON a1.attrelid = t.oid AND a1.attnum = i.indkey[0]
   JOIN pg_attribute a2 ON a2.attrelid = t.oid AND a2.attnum = i.indkey[1]
   WHERE n.nspname = 'cron' AND t.relname = 'job_run_details' AND i.indisvalid
     AND i.indpred IS NULL AND a1.attname = 'jobid' AND a2.attname = 'runid'
   ORDER BY c.relname LIMIT 1)"""

# What the role can see, from the catalogs only (readable by every role): whether pg_cron's
# tables exist, whether the role may read them and whether RLS filters them for it, and
# whether the role script's functions are there and executable. Sizes: pg_relation_size
# stats the files; reltuples is the planner's estimate (-1 before the first VACUUM/ANALYZE).
PROBE_SQL = """
SELECT
  (SELECT coalesce(json_object_agg(c.relname, json_build_object(
      'readable', has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'),
      'rls', row_security_active(c.oid),
      'reltuples', c.reltuples,
      'bytes', pg_relation_size(c.oid))), '{}')
   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = 'cron' AND c.relname IN ('job', 'job_run_details')
     AND c.relkind IN ('r', 'p')),
  (SELECT coalesce(json_object_agg(p.proname,
      has_schema_privilege(n.oid, 'USAGE') AND has_function_privilege(p.oid, 'EXECUTE')), '{}')
   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname = %(schema)s AND p.proname IN ('cron_jobs', 'cron_job_runs')),
  current_user::text,
  coalesce(current_setting('cron.timezone', true), 'GMT'),
  {index}
""".replace("{index}", INDEX_NAME)

# Where the jobs and their newest runs come from: the tables, or the role script's functions
# (same columns) when RLS hides other roles' rows. {kept} is the CTE of the jobs served.
DIRECT_JOBS = (
    "SELECT jobid, jobname::text AS jobname, schedule, username::text AS username, database,"
    " active FROM cron.job"
)
DIRECT_RUNS = """SELECT k.jobid, r.runid, r.status, r.start_time, r.end_time
  FROM kept k CROSS JOIN LATERAL (
    SELECT d.runid, d.status, d.start_time, d.end_time FROM cron.job_run_details d
    WHERE {match} ORDER BY {order} LIMIT %(lookback)s) r"""
# Each job's newest runs. The planner assumes a job's runs are spread evenly over the history,
# so for `jobid = $1 ORDER BY runid DESC LIMIT n` it walks the runid primary key backwards and
# filters the other jobs' runs away, even when the (jobid, runid) index exists: cheap for a job
# that runs every minute, the whole history for one that stopped (bench/cron_history.py). With
# the index, the job is matched as a range and ordered by (jobid, runid): an order only that
# index delivers (an equality makes jobid a constant, and the order the primary key's again),
# so the planner reads `lookback` entries of it per job. Without the index the backwards walk
# is the best there is.
RUNS_INDEXED = {
    "match": "d.jobid BETWEEN k.jobid AND k.jobid",
    "order": "d.jobid DESC, d.runid DESC",
}
RUNS_PKEY = {"match": "d.jobid = k.jobid", "order": "d.runid DESC"}
FUNCTION_JOBS = "SELECT * FROM runbook_exporter.cron_jobs()"
FUNCTION_RUNS = (
    "SELECT * FROM runbook_exporter.cron_job_runs(ARRAY(SELECT jobid FROM kept), %(lookback)s)"
)

# One row per served job (active ones first, then by jobid, at most max_jobs), or one row of
# NULLs and the counts when there is no job. Everything per job comes from its newest
# `lookback` runs, in one pass: the newest run (in progress or not), the newest finished one,
# the newest success, the failures since that success and in the window. (One GROUP BY
# rather than joining the runs back per row: the planner's estimates of such self-joins grow
# past jit_above_cost and the JIT compile alone costs hundreds of milliseconds.)
JOBS_SQL = """
WITH jobs AS ({jobs}),
counted AS (
  SELECT count(*) FILTER (WHERE active) AS n_active, count(*) FILTER (WHERE NOT active) AS n_off
  FROM jobs
),
kept AS (SELECT * FROM jobs ORDER BY active DESC, jobid LIMIT %(max_jobs)s),
runs AS ({runs}),
marked AS (
  SELECT r.*,
    max(r.runid) FILTER (WHERE r.status = 'succeeded') OVER (PARTITION BY r.jobid) AS success
  FROM runs r
),
agg AS (
  SELECT jobid,
    (array_agg(status ORDER BY runid DESC))[1] AS newest_status,
    (array_agg(start_time ORDER BY runid DESC))[1] AS newest_start,
    (array_agg(status ORDER BY runid DESC) FILTER (WHERE status IN ('succeeded', 'failed')))[1]
      AS finished_status,
    (array_agg(start_time ORDER BY runid DESC)
      FILTER (WHERE status IN ('succeeded', 'failed')))[1] AS finished_start,
    (array_agg(end_time ORDER BY runid DESC)
      FILTER (WHERE status IN ('succeeded', 'failed')))[1] AS finished_end,
    (array_agg(end_time ORDER BY runid DESC) FILTER (WHERE status = 'succeeded'))[1]
      AS success_end,
    count(*) FILTER (WHERE status = 'failed' AND runid > coalesce(success, 0)) AS consecutive,
    count(*) FILTER (
      WHERE status = 'failed' AND start_time >= now() - make_interval(secs => %(window)s)
    ) AS window_failures
  FROM marked GROUP BY jobid
)
SELECT k.jobid, k.jobname, k.schedule, k.username, k.database, k.active,
  a.newest_status, extract(epoch FROM a.newest_start),
  a.finished_status, extract(epoch FROM a.finished_start), extract(epoch FROM a.finished_end),
  extract(epoch FROM a.success_end),
  coalesce(a.consecutive, 0), coalesce(a.window_failures, 0),
  extract(epoch FROM now()),
  c.n_active, c.n_off
FROM counted c
LEFT JOIN kept k ON true
LEFT JOIN agg a ON a.jobid = k.jobid
ORDER BY k.active DESC, k.jobid
"""


def jobs_sql(through_functions: bool, indexed: bool = True) -> str:
    if through_functions:  # the function picks its order itself (the role script)
        jobs, runs = FUNCTION_JOBS, FUNCTION_RUNS
    else:
        jobs = DIRECT_JOBS
        runs = DIRECT_RUNS
        for key, value in (RUNS_INDEXED if indexed else RUNS_PKEY).items():
            runs = runs.replace("{" + key + "}", value)
    return JOBS_SQL.replace("{jobs}", jobs).replace("{runs}", runs)


# --- metrics ------------------------------------------------------------------------------

JOBS = spec(
    "runbook_cron_jobs",
    "gauge",
    "pg_cron jobs of the target by state (active, inactive), all of them (not only those served).",
    ("target", "state"),
    SRC,
)
OMITTED = spec(
    "runbook_cron_jobs_omitted",
    "gauge",
    "pg_cron jobs past max_jobs (inactive ones first, then the highest jobids): not served.",
    T,
    SRC,
)
INFO = spec(
    "runbook_cron_job_info",
    "gauge",
    "1 per served pg_cron job: its jobid, schedule, role and database (never its command).",
    ("target", "jobname", "jobid", "schedule", "username", "database"),
    SRC,
)
ACTIVE = spec(
    "runbook_cron_job_active",
    "gauge",
    "1 when the pg_cron job is active (scheduled), 0 when not; the alerts skip inactive jobs.",
    J,
    SRC,
)
LAST_SUCCEEDED = spec(
    "runbook_cron_job_last_run_succeeded",
    "gauge",
    "1 when the job's newest finished run succeeded, 0 when it failed; absent when none of "
    "its newest runs (lookback) has finished.",
    J,
    SRC,
)
RUNNING = spec(
    "runbook_cron_job_running",
    "gauge",
    "1 while the job's newest run is in progress (starting, connecting, sending, running).",
    J,
    SRC,
)
RUNNING_SECONDS = spec(
    "runbook_cron_job_running_seconds",
    "gauge",
    "How long the job's run in progress has lasted; 0 when none runs.",
    J,
    SRC,
)
LAST_START = spec(
    "runbook_cron_job_last_run_start_timestamp_seconds",
    "gauge",
    "Start of the job's newest run, in progress or finished; absent when it has none.",
    J,
    SRC,
)
LAST_END = spec(
    "runbook_cron_job_last_run_end_timestamp_seconds",
    "gauge",
    "End of the job's newest finished run; absent when none of its newest runs has finished.",
    J,
    SRC,
)
LAST_DURATION = spec(
    "runbook_cron_job_last_run_duration_seconds",
    "gauge",
    "How long the job's newest finished run took.",
    J,
    SRC,
)
LAST_SUCCESS = spec(
    "runbook_cron_job_last_success_timestamp_seconds",
    "gauge",
    "End of the job's newest successful run; absent when none of its newest runs (lookback) "
    "succeeded.",
    J,
    SRC,
)
CONSECUTIVE = spec(
    "runbook_cron_job_consecutive_failures",
    "gauge",
    "Failed runs of the job since its newest success (runs in progress not counted); at most "
    "lookback.",
    J,
    SRC,
)
RECENT_FAILURES = spec(
    "runbook_cron_job_recent_failures",
    "gauge",
    "Failed runs of the job that started within failure_window; at most lookback.",
    J,
    SRC,
)
OVERDUE = spec(
    "runbook_cron_job_overdue_seconds",
    "gauge",
    "How long ago the job's schedule fired with no run started since (0: on time or running); "
    "absent for an inactive job, an unparseable or @reboot schedule.",
    J,
    SRC,
)
HISTORY_ROWS = spec(
    "runbook_cron_history_rows_estimated",
    "gauge",
    "Rows of cron.job_run_details, the planner's estimate (pg_class.reltuples); absent before "
    "the table's first VACUUM or ANALYZE.",
    T,
    SRC,
)
HISTORY_BYTES = spec(
    "runbook_cron_history_size_bytes",
    "gauge",
    "Size of cron.job_run_details on disk (its heap, without indexes and TOAST data).",
    T,
    SRC,
)
# thresholds (per job: a job's override under `jobs:` or the collector's defaults)
TH_CONSECUTIVE = spec(
    "runbook_cron_job_consecutive_failures_threshold",
    "gauge",
    "Consecutive failed runs at which the job alerts (CronJobFailing).",
    JS,
    SRC,
)
TH_OVERDUE = spec(
    "runbook_cron_job_overdue_threshold_seconds",
    "gauge",
    "Grace past a missed scheduled run after which the job alerts (CronJobOverdue).",
    JS,
    SRC,
)
TH_DURATION = spec(
    "runbook_cron_job_run_duration_threshold_seconds",
    "gauge",
    "Run time above which a run in progress alerts (CronJobRunTooLong).",
    JS,
    SRC,
)
TH_HISTORY = spec(
    "runbook_cron_history_rows_threshold",
    "gauge",
    "Estimated cron.job_run_details rows above which the history alerts (CronHistoryTooLarge).",
    ("target", "severity"),
    SRC,
)
FAILURE_WINDOW = spec(
    "runbook_cron_failure_window_seconds",
    "gauge",
    "Window of runbook_cron_job_recent_failures.",
    T,
    SRC,
)

JOB_THRESHOLDS: Fields = {
    "consecutive_failures_warning": (TH_CONSECUTIVE, "warning"),
    "consecutive_failures_critical": (TH_CONSECUTIVE, "critical"),
    "overdue_grace": (TH_OVERDUE, "warning"),
    "run_duration_warning": (TH_DURATION, "warning"),
}
TARGET_THRESHOLDS: Fields = {
    "history_rows_warning": (TH_HISTORY, "warning"),
    "failure_window": (FAILURE_WINDOW, None),
}


# --- settings -----------------------------------------------------------------------------


class CronJobThresholds(Model):
    """A job's thresholds; under `jobs: {<jobname>: ...}` only the keys given override the
    collector's defaults."""

    # runbook 001: "alert if the retention cleanup fails": the first failed run warns
    consecutive_failures_warning: int = Field(1, ge=1, le=1000)
    # runbook 004: three consecutive failures page
    consecutive_failures_critical: int = Field(3, ge=1, le=1000)
    # pg_cron starts a run within a second of its time, unless cron.max_running_jobs are busy
    # or the scheduler is down; 5 minutes absorbs a busy scheduler, not a stopped one
    overdue_grace: Duration = 300.0
    # pg_cron jobs are usually maintenance (purges, refreshes, pg_net calls): half an hour is
    # long for any of them, and a run that lasts past its next time makes pg_cron skip runs
    run_duration_warning: Duration = 1800.0


class CronJobOverride(Model):
    consecutive_failures_warning: int | None = Field(None, ge=1, le=1000)
    consecutive_failures_critical: int | None = Field(None, ge=1, le=1000)
    overdue_grace: Duration | None = None
    run_duration_warning: Duration | None = None


class CronSettings(CollectorSettings, CronJobThresholds):
    # jobs served (labels bounded): active ones first, then by jobid
    max_jobs: int = Field(100, ge=1, le=1000)
    # newest runs read per job: counts of failures are capped at it
    lookback: int = Field(50, ge=1, le=1000)
    # runbook_cron_job_recent_failures counts failed runs started within this window
    failure_window: Duration = 3600.0
    # pg_cron never purges its history; a million rows is ~20 jobs a minute for a month,
    # past which the runbook 001 retention job is missing or failing
    history_rows_warning: int = Field(1_000_000, ge=1)
    # per-job overrides of the thresholds above, by jobname (or jobid for unnamed jobs)
    jobs: dict[str, CronJobOverride] = Field(default_factory=dict)

    def job_thresholds(self, jobname: str) -> CronJobThresholds:
        base = {f: getattr(self, f) for f in CronJobThresholds.model_fields}
        override = self.jobs.get(jobname)
        if override is not None:
            base.update(override.model_dump(exclude_none=True))
        return CronJobThresholds(**base)


# --- schedules ----------------------------------------------------------------------------

# pg_cron 1.5+: '[1-59] seconds' runs the job every N seconds
INTERVAL_RE = re.compile(r"^\s*([1-9]|[1-5][0-9])\s+seconds?\s*$", re.IGNORECASE)
MACROS = {  # the vixie-cron shorthands pg_cron accepts
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class ScheduleError(ValueError):
    pass


def next_fire(schedule: str, after: datetime, tz: ZoneInfo) -> datetime | None:
    """The first time the schedule fires strictly after `after`; None for a schedule that
    never fires on the clock (@reboot). Raises ScheduleError for one we cannot read.

    cronsim (healthchecks.io's parser, the one it runs for the same question: "is this job
    late?") has no dependencies and follows cron's DST rules; it takes the expression in the
    zone pg_cron evaluates it in (cron.timezone, GMT by default)."""
    text = schedule.strip()
    m = INTERVAL_RE.match(text)
    if m:
        return after + timedelta(seconds=int(m.group(1)))
    if text.lower() == "@reboot":
        return None
    expr = MACROS.get(text.lower(), text)
    fields = expr.split()
    if len(fields) == 5 and "$" in fields[2]:  # pg_cron's "last day of the month"
        fields[2] = fields[2].replace("$", "L")
        expr = " ".join(fields)
    try:
        return next(CronSim(expr, after.astimezone(tz)))
    except (CronSimError, StopIteration) as e:
        raise ScheduleError(f"cannot parse cron schedule {schedule!r}: {e}") from None


def overdue_seconds(
    schedule: str, reference: datetime, now: datetime, tz: ZoneInfo
) -> float | None:
    """How long ago the schedule's first fire time after `reference` (the newest run's start,
    or when the job was first seen without runs) passed with no run since; 0 when it has not
    come yet, None when the schedule never fires on the clock."""
    due = next_fire(schedule, reference, tz)
    if due is None:
        return None
    return max((now - due).total_seconds(), 0.0)


def cron_timezone(name: str) -> tuple[ZoneInfo, str | None]:
    """The zone of cron.timezone, or UTC with a note when this machine does not know it."""
    try:
        return ZoneInfo(name), None
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC"), f"cron.timezone {name!r} is unknown here: schedules read as UTC"


def job_labels(rows: list[tuple]) -> list[str]:
    """jobname, or the jobid as text for an unnamed job; a name that two jobs share (pg_cron
    names are unique per role only) gets `#<jobid>` on each, so no two jobs share a label."""
    base = [name if name else str(jobid) for jobid, name in rows]
    seen: dict[str, int] = {}
    for b in base:
        seen[b] = seen.get(b, 0) + 1
    return [f"{b}#{jobid}" if seen[b] > 1 else b for b, (jobid, _) in zip(base, rows, strict=True)]


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(float(epoch), UTC)


# --- access -------------------------------------------------------------------------------


class Access:
    """What PROBE_SQL found: how (and whether) the role can read pg_cron's tables."""

    def __init__(
        self, tables: dict, functions: dict, role: str, timezone: str, index: str | None
    ) -> None:
        self.tables, self.functions, self.role, self.timezone = tables, functions, role, timezone
        self.index = index  # the (jobid, runid) index of cron.job_run_details, or None

    @property
    def installed(self) -> bool:
        return {"job", "job_run_details"} <= set(self.tables)

    @property
    def direct(self) -> bool:
        return all(t["readable"] and not t["rls"] for t in self.tables.values())

    @property
    def functions_present(self) -> bool:
        return set(FUNCTIONS) <= set(self.functions)

    @property
    def functions_usable(self) -> bool:
        return self.functions_present and all(self.functions[f] for f in FUNCTIONS)

    def problem(self) -> str | None:
        """Why the role cannot read every job's runs, or None."""
        if self.direct or self.functions_usable:
            return None
        if self.functions_present:
            return (
                f"role {self.role} may not execute {', '.join(FUNCTIONS.values())}: "
                f"GRANT USAGE ON SCHEMA {FUNCTION_SCHEMA} and EXECUTE on them to {self.role} "
                f"(or run {ROLE_SCRIPT} again)"
            )
        hidden = [
            f"cron.{n}" for n, t in sorted(self.tables.items()) if t["rls"] or not t["readable"]
        ]
        return (
            f"{', '.join(hidden)}: other roles' rows are hidden from role {self.role} "
            "(row-level security or no SELECT privilege) and the SECURITY DEFINER functions "
            f"{FUNCTION_SCHEMA}.cron_jobs/cron_job_runs are missing: run {ROLE_SCRIPT} as the "
            "owner of pg_cron's tables (on Supabase: postgres)"
        )


async def probe(conn) -> Access:
    cur = await conn.execute(PROBE_SQL, {"schema": FUNCTION_SCHEMA}, prepare=False)
    return Access(*await cur.fetchone())


# --- the collector ------------------------------------------------------------------------


class Cron(Collector):
    name = "cron"
    Settings = CronSettings
    first_run = 60

    def __init__(self, target, settings) -> None:
        super().__init__(target, settings)
        # jobid -> epoch when first seen without any run: where "overdue" counts from for a
        # job pg_cron has never run (cron.job has no creation time)
        self._first_seen: dict[int, float] = {}
        self._bad_schedules: set[str] = set()  # logged once each
        self._tz_note: str | None = None

    def _history(self, access: Access) -> list[Metric]:
        t = self.target.name
        details = access.tables["job_run_details"]
        out = [HISTORY_BYTES.one(details["bytes"], t)]
        if details["reltuples"] >= 0:
            out.append(HISTORY_ROWS.one(details["reltuples"], t))
        series = ThresholdSeries(TARGET_THRESHOLDS)
        series.add(self.settings, TARGET_THRESHOLDS, t)
        return out + series.families()

    async def collect(self, conn) -> list[Metric]:
        access = await probe(conn)
        if not access.installed:
            return []  # no pg_cron in this database: nothing to say
        history = self._history(access)
        problem = access.problem()
        if problem is not None:
            raise PartialFailure(problem, history)
        s = self.settings
        cur = await conn.execute(
            jobs_sql(not access.direct, access.index is not None),
            {"max_jobs": s.max_jobs, "lookback": s.lookback, "window": s.failure_window},
            prepare=False,
        )
        rows = await cur.fetchall()
        return history + self._families(rows, access.timezone)

    def _families(self, rows: list[tuple], timezone: str) -> list[Metric]:
        t, s = self.target.name, self.settings
        tz, note = cron_timezone(timezone)
        if note and note != self._tz_note:
            log.warning(note, extra={"target": t})
        self._tz_note = note
        n_active, n_off = (rows[0][-2], rows[0][-1]) if rows else (0, 0)
        rows = [r for r in rows if r[0] is not None]
        jobs = JOBS.family()
        jobs.add_metric([t, "active"], n_active)
        jobs.add_metric([t, "inactive"], n_off)
        specs = (INFO, ACTIVE, LAST_SUCCEEDED, RUNNING, RUNNING_SECONDS, LAST_START, LAST_END)
        specs += (LAST_DURATION, LAST_SUCCESS, CONSECUTIVE, RECENT_FAILURES, OVERDUE)
        fams = {sp: sp.family() for sp in specs}
        thresholds = ThresholdSeries(JOB_THRESHOLDS)
        labels = job_labels([(r[0], r[1]) for r in rows])
        seen: set[int] = set()
        for label, row in zip(labels, rows, strict=True):
            (jobid, _, schedule, username, database, active, newest_status, newest_start) = row[:8]
            (fin_status, fin_start, fin_end, success_end, consecutive, window_failures) = row[8:14]
            now = float(row[14])
            jl = [t, label]
            seen.add(jobid)
            fams[INFO].add_metric(
                [t, label, str(jobid), schedule, username or "", database or ""], 1
            )
            fams[ACTIVE].add_metric(jl, 1 if active else 0)
            running = newest_status is not None and newest_status not in FINISHED
            fams[RUNNING].add_metric(jl, 1 if running else 0)
            elapsed = max(now - float(newest_start), 0.0) if running and newest_start else 0.0
            fams[RUNNING_SECONDS].add_metric(jl, elapsed)
            if newest_start is not None:
                fams[LAST_START].add_metric(jl, float(newest_start))
            if fin_status is not None:
                fams[LAST_SUCCEEDED].add_metric(jl, 1 if fin_status == "succeeded" else 0)
                if fin_end is not None:
                    fams[LAST_END].add_metric(jl, float(fin_end))
                    if fin_start is not None:
                        fams[LAST_DURATION].add_metric(
                            jl, max(float(fin_end) - float(fin_start), 0.0)
                        )
            if success_end is not None:
                fams[LAST_SUCCESS].add_metric(jl, float(success_end))
            fams[CONSECUTIVE].add_metric(jl, consecutive)
            fams[RECENT_FAILURES].add_metric(jl, window_failures)
            if active:
                overdue = self._overdue(jobid, label, schedule, running, newest_start, now, tz)
                if overdue is not None:
                    fams[OVERDUE].add_metric(jl, overdue)
            thresholds.add(s.job_thresholds(label), JOB_THRESHOLDS, t, label)
        # forget jobs no longer served (dropped, or past max_jobs)
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in seen}
        served = [f for f in fams.values() if f.samples]
        omitted = OMITTED.one(max(n_active + n_off - len(rows), 0), t)
        return [jobs, omitted, *served, *thresholds.families()]

    def _overdue(
        self,
        jobid: int,
        label: str,
        schedule: str,
        running: bool,
        newest_start: float | None,
        now: float,
        tz: ZoneInfo,
    ) -> float | None:
        if running:
            return 0.0  # a run in progress is not late (CronJobRunTooLong watches it)
        if newest_start is None:
            # never run (within the lookback: none at all, since runs are read newest first)
            reference = self._first_seen.setdefault(jobid, now)
        else:
            self._first_seen.pop(jobid, None)
            reference = float(newest_start)
        try:
            return overdue_seconds(schedule, _ts(reference), _ts(now), tz)
        except ScheduleError as e:
            if schedule not in self._bad_schedules:
                self._bad_schedules.add(schedule)
                log.warning(
                    "cron job schedule not understood: overdue not served",
                    extra={"target": self.target.name, "jobname": label, "error": str(e)},
                )
            return None

    # --- doctor ---------------------------------------------------------------------------

    async def doctor(self, conn, report) -> None:
        enabled = self.settings.enabled

        def finding(text: str, fix: str | None = None) -> None:
            if enabled:
                report.finding(text, fix=fix)
            else:
                report.note(f"{text} (the cron collector is disabled)")
                if fix:
                    report.note(f"fix: {fix}")

        access = await probe(conn)
        if not access.installed:
            report.note("cron: pg_cron is not installed in this database: nothing to collect")
            return
        role = access.role
        if access.direct:
            report.ok(f"cron: role {role} reads every job's runs (no row-level security for it)")
        elif access.functions_usable:
            report.ok(
                f"cron: row-level security hides other roles' jobs from {role}; it reads them "
                f"through {FUNCTION_SCHEMA}.cron_jobs() and cron_job_runs() (SECURITY DEFINER)"
            )
        elif access.functions_present:
            finding(
                f"cron: role {role} may not execute the functions of {ROLE_SCRIPT}",
                fix=(
                    f'GRANT USAGE ON SCHEMA {FUNCTION_SCHEMA} TO "{role}";\n'
                    + "\n".join(
                        f'GRANT EXECUTE ON FUNCTION {sig} TO "{role}";'
                        for sig in FUNCTIONS.values()
                    )
                ),
            )
            return
        else:
            finding(
                f"cron: row-level security (or a missing SELECT) hides other roles' cron jobs "
                f"and runs from {role}, and the SECURITY DEFINER functions are missing: run "
                f"{ROLE_SCRIPT} as the owner of pg_cron's tables (on Supabase: postgres)",
                fix=f'psql "$ADMIN_DATABASE_URL" -v ON_ERROR_STOP=1 -f {ROLE_SCRIPT}',
            )
            return
        self._doctor_index(access, finding, report)
        await self._doctor_jobs(conn, access, report, finding)

    def _doctor_index(self, access: Access, finding, report) -> None:
        name = access.index
        if name:
            report.ok(f"cron: each job's newest runs are read through index {name}")
        else:
            finding(
                "cron: cron.job_run_details has no index on (jobid, runid) (pg_cron ships only "
                "its runid primary key): each run walks the history backwards for jobs that "
                "have not run lately, O(history); create",
                fix=INDEX_STATEMENT,
            )

    async def _doctor_jobs(self, conn, access: Access, report, finding) -> None:
        s = self.settings
        cur = await conn.execute(
            jobs_sql(not access.direct, access.index is not None),
            {"max_jobs": s.max_jobs, "lookback": 1, "window": s.failure_window},
            prepare=False,
        )
        rows = [r for r in await cur.fetchall() if r[0] is not None]
        tz, note = cron_timezone(access.timezone)
        if note:
            report.note(f"cron: {note}")
        labels = job_labels([(r[0], r[1]) for r in rows])
        report.ok(f"cron: {len(rows)} job(s) served (timezone {access.timezone})")
        now = datetime.now(UTC)
        for label, row in zip(labels, rows, strict=True):
            try:
                if next_fire(row[2], now, tz) is None:
                    report.note(f"cron: job {label} runs @reboot only: never overdue")
            except ScheduleError as e:
                report.note(f"cron: job {label}: {e}; runbook_cron_job_overdue_seconds absent")
        unknown = sorted(set(s.jobs) - set(labels))
        if unknown:
            report.note(f"cron: jobs: overrides for job(s) not served: {', '.join(unknown)}")
        rows_est = access.tables["job_run_details"]["reltuples"]
        if rows_est > s.history_rows_warning:
            finding(
                f"cron: cron.job_run_details holds ~{rows_est:.0f} rows (warning at "
                f"{s.history_rows_warning}): pg_cron never deletes them; schedule a purge",
                fix=PURGE_STATEMENT,
            )


PURGE_STATEMENT = (
    "SELECT cron.schedule('purge-cron-history', '17 3 * * *',\n"
    "  $$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '14 days'$$);"
)
