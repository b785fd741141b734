"""`walg:` the newest backup in `wal-g backup-list --json` (better with `--detail`).

The shape: a JSON list of backups, each with `backup_name`, `time` (the backup sentinel's
modification time, RFC 3339), `wal_file_name`; with `--detail` also `start_time`,
`finish_time`, `hostname`, `data_dir`, `pg_version`, `start_lsn`, `finish_lsn`,
`is_permanent`, `uncompressed_size` and `compressed_size` (bytes). The backup time is
`finish_time` when given (the modification time moves when storage re-tiers an object), else
`time`; the size is `compressed_size`. WAL-G prints nothing (or `[]`) when there is no backup.
"""

from __future__ import annotations

from typing import Any

from exporter.backups.base import (
    BackupSource,
    Reading,
    SourceFailure,
    number,
    parse_json,
    parse_time,
)
from exporter.backups.command import listing

# Go's zero time.Time, what a missing finish_time is printed as
_ZERO = -62135596800.0


def _when(b: dict, i: int) -> float:
    finish = b.get("finish_time")
    if finish is not None:
        t = parse_time(finish, f"backup[{i}].finish_time")
        if t > _ZERO + 1:
            return t
    if "time" not in b:
        raise SourceFailure("invalid_output", f"backup[{i}] has neither finish_time nor time")
    return parse_time(b["time"], f"backup[{i}].time")


def parse(doc: Any) -> Reading:
    if doc is None:
        doc = []
    if not isinstance(doc, list) or not all(isinstance(b, dict) for b in doc):
        raise SourceFailure("invalid_output", "not WAL-G backup-list JSON: expected a list")
    if not doc:
        return Reading(None, 0, detail="no backups listed")
    dated = [(_when(b, i), b) for i, b in enumerate(doc)]
    last, newest = max(dated, key=lambda d: d[0])
    detail = f"{len(doc)} backup(s), newest {newest.get('backup_name')}"
    return Reading(last, len(doc), size=number(newest.get("compressed_size")), detail=detail)


class WalG(BackupSource):
    key = "walg"

    async def read(self) -> Reading:
        data = await listing(self.settings, self.backup.timeout)
        if not data.strip():
            return parse([])
        return parse(parse_json(data, "WAL-G backup-list output"))
