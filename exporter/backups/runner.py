"""Backup jobs: one scheduler Job per configured backup, each with a Checker that reads its
source (one of the kinds in this package) and turns the Reading into metric families.

A source that cannot be read is a result, not a crash: `runbook_backup_source_up` 0 and the
reason, logged once per change of reason. The last backup found while the source worked keeps
being served with its age growing, so an unreadable source never hides a backup going stale.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from exporter import backups as kinds
from exporter.backups.base import REASONS, BackupSource, Reading, SourceFailure
from exporter.backups.config import Backup
from exporter.metrics import ThresholdSeries, spec
from exporter.scheduler import Job
from exporter.secrets import redact

if TYPE_CHECKING:
    from exporter.db import TargetDB
    from exporter.doctor import Report

log = logging.getLogger("exporter.backups")
SRC = "backups/runner.py"
B = ("backup",)
JOB_TIMEOUT_MARGIN = 2.0  # seconds above the source's own timeout before the scheduler steps in

SOURCE_UP = spec(
    "runbook_backup_source_up",
    "gauge",
    "1 when the backup's source was read and understood on the last check, else 0 (see "
    "runbook_backup_source_failure_reason).",
    B,
    SRC,
)
FAILURE_REASON = spec(
    "runbook_backup_source_failure_reason",
    "gauge",
    "1 for the reason the last check of the backup's source failed, 0 for the others of the "
    "fixed set (" + ", ".join(REASONS) + "); all 0 when it worked.",
    ("backup", "reason"),
    SRC,
)
LAST_SUCCESS = spec(
    "runbook_backup_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the newest good backup the source listed (file mtime, pgBackRest "
    "timestamp.stop, WAL-G finish_time, Supabase inserted_at, the query's value); absent until "
    "one is found, kept while the source is unreadable.",
    B,
    SRC,
)
AGE = spec(
    "runbook_backup_age_seconds",
    "gauge",
    "Age of the newest good backup at the last check (kept growing while the source is "
    "unreadable); absent until one is found.",
    B,
    SRC,
)
SIZE = spec(
    "runbook_backup_size_bytes",
    "gauge",
    "Size of the newest good backup where the source says (file size, pgBackRest "
    "info.repository.size, WAL-G compressed_size, the query's second column).",
    B,
    SRC,
)
COUNT = spec(
    "runbook_backup_found",
    "gauge",
    "Good backups the source lists (files: matching files of at least min_size among the "
    "entries examined); 0 means none at all. Absent while the source is unreadable.",
    B,
    SRC,
)
UNDERSIZED = spec(
    "runbook_backup_undersized_files",
    "gauge",
    "file sources: files matching the pattern but below min_size (not counted as backups).",
    B,
    SRC,
)
TRUNCATED = spec(
    "runbook_backup_listing_truncated",
    "gauge",
    "file sources: 1 when the directory had more entries than max_entries and the scan "
    "stopped there (a newer backup may have been missed).",
    B,
    SRC,
)
INFO = spec(
    "runbook_backup_source_info",
    "gauge",
    "1 for each configured backup, with the kind of its source.",
    ("backup", "kind"),
    SRC,
)
CHECK_INTERVAL = spec(
    "runbook_backup_check_interval_seconds",
    "gauge",
    "How often the backup's source is checked.",
    B,
    SRC,
)
AGE_THRESHOLD = spec(
    "runbook_backup_age_threshold_seconds",
    "gauge",
    "Age of the newest backup above which BackupTooOld fires at this severity.",
    ("backup", "severity"),
    SRC,
)
THRESHOLD_FIELDS = {
    "max_age_warning": (AGE_THRESHOLD, "warning"),
    "max_age_critical": (AGE_THRESHOLD, "critical"),
}


def source_of(backup: Backup, db: TargetDB | None = None) -> BackupSource:
    return kinds.load()[backup.kind](backup, db)


class Checker:
    def __init__(self, backup: Backup, db: TargetDB | None = None) -> None:
        self.backup = backup
        self.source = source_of(backup, db)
        self.label = backup.name
        self.kept: Reading | None = None  # the last reading with a backup in it
        self.last_reason: str | None = "never"  # for logging changes only
        self.last_detail = ""

    async def check(self) -> list[Metric]:
        try:
            reading = await self.source.read()
        except SourceFailure as e:
            return self._failed(e.reason, redact(str(e)))
        except Exception as e:  # a reader bug: a failed check, every series still served
            return self._failed("error", redact(f"{type(e).__name__}: {e}")[:300])
        return self._worked(reading)

    def failed_run(self, error: str) -> list[Metric]:
        """The job's run raised or was cut by the scheduler (a safety net: every reader bounds
        itself): served as a failed check instead of the series vanishing."""
        return self._failed("timeout" if error.startswith("timed out") else "error", error)

    def _worked(self, r: Reading) -> list[Metric]:
        if r.last is not None:
            self.kept = r
        if self.last_reason is not None or r.detail != self.last_detail:
            if self.last_reason not in (None, "never"):
                log.info("backup source recovered", extra={"backup": self.label})
            level = logging.WARNING if (r.last is None or r.truncated) else logging.INFO
            log.log(level, "backup checked", extra={"backup": self.label, "found": r.detail})
        self.last_reason, self.last_detail = None, r.detail
        fams = self._common(None)
        fams.append(COUNT.one(r.count, self.label))
        if r.undersized is not None:
            fams.append(UNDERSIZED.one(r.undersized, self.label))
            fams.append(TRUNCATED.one(1 if r.truncated else 0, self.label))
        return fams

    def _failed(self, reason: str, error: str) -> list[Metric]:
        if reason != self.last_reason:
            log.warning(
                "backup source failed",
                extra={"backup": self.label, "reason": reason, "error": error},
            )
            self.last_reason = reason
        return self._common(reason)

    def _common(self, reason: str | None) -> list[Metric]:
        label = self.label
        fams = [SOURCE_UP.one(0 if reason else 1, label)]
        reasons = FAILURE_REASON.family()
        for r in REASONS:
            reasons.add_metric([label, r], 1 if r == reason else 0)
        fams.append(reasons)
        kept = self.kept
        if kept is not None and kept.last is not None:
            fams.append(LAST_SUCCESS.one(kept.last, label))
            fams.append(AGE.one(max(time.time() - kept.last, 0.0), label))
            if kept.size is not None:
                fams.append(SIZE.one(kept.size, label))
        return fams


def jitter(name: str, interval: float) -> float:
    return zlib.crc32(f"backup/{name}".encode()) / 2**32 * interval


class BackupJob(Job):
    @property
    def kind(self) -> str:  # what the scheduler's log lines call it
        return "backup check"


def job_key(name: str) -> tuple[str, str]:
    # a space cannot occur in a target or app name (LabelValue), so no key collides
    return ("backup check", name)


def backup_job(backup: Backup, db: TargetDB | None = None) -> Job:
    checker = Checker(backup, db)
    return BackupJob(
        key=job_key(backup.name),
        interval=backup.interval,
        timeout=backup.timeout + JOB_TIMEOUT_MARGIN,
        run=checker.check,
        first_delay=jitter(backup.name, backup.interval),
        self_metrics=False,
        on_error=checker.failed_run,
    )


def families(backups: list[Backup]) -> list[Metric]:
    """The configuration's series: thresholds, kinds, intervals (built once per load)."""
    series = ThresholdSeries(THRESHOLD_FIELDS)
    info, interval = INFO.family(), CHECK_INTERVAL.family()
    for b in backups:
        series.add(b, THRESHOLD_FIELDS, b.name)
        info.add_metric([b.name, b.kind], 1)
        interval.add_metric([b.name], b.interval)
    return [*series.families(), *(f for f in (info, interval) if f.samples)]


def _age(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{seconds:.0f}s"


async def doctor(backups: list[Backup], targets: dict, report: Report) -> None:
    """Check each backup's source once and say what it found (`runbook-exporter doctor`)."""
    from exporter.db import TargetDB

    for b in backups:
        print(f"backup {b.name} ({b.describe()})")
        db = TargetDB(targets[b.sql.target]) if b.sql is not None else None
        try:
            reading = await source_of(b, db).read()
        except SourceFailure as e:
            report.finding(f"source unreadable ({e.reason}): {e}")
            continue
        except Exception as e:
            report.error(f"check failed: {type(e).__name__}: {e}")
            continue
        finally:
            if db is not None:
                await db.close()
        report.ok(reading.detail)
        if reading.last is None:
            report.finding("no backup found: BackupMissing would fire")
            continue
        age = time.time() - reading.last
        size = f", {reading.size:.0f} bytes" if reading.size is not None else ""
        if age > b.max_age_critical:
            report.finding(f"newest backup is {_age(age)} old{size}: past max_age_critical")
        elif age > b.max_age_warning:
            report.finding(f"newest backup is {_age(age)} old{size}: past max_age_warning")
        else:
            report.ok(f"newest backup is {_age(age)} old{size}")
        if reading.undersized:
            report.note(f"{reading.undersized} matching file(s) below min_size were not counted")
        if reading.truncated:
            report.finding("the directory has more entries than max_entries: raise it or prune")
