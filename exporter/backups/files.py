"""`file:` the newest backup file in a directory (runbook 002's `supabase db dump --file
backup-<date>.sql`, runbook 000's nightly `npm run backup:database`).

One directory, not recursive; a regular file whose name matches the glob and whose size is at
least `min_size` is a backup, its mtime the backup time. Smaller matching files are counted as
undersized (an interrupted or empty dump) and never count as a backup. At most `max_entries`
entries are examined, so a directory that grew to millions of files costs a bounded scan (and
says so: `runbook_backup_listing_truncated` 1). The scan runs in a thread: a slow network
filesystem blocks that thread, never the collection loop.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os

from exporter.backups.base import BackupSource, Reading, SourceFailure
from exporter.backups.config import FileSource


def scan(src: FileSource) -> Reading:
    try:
        entries = os.scandir(src.directory)
    except FileNotFoundError:
        raise SourceFailure("unreadable", f"directory {src.directory} does not exist") from None
    except NotADirectoryError:
        raise SourceFailure("unreadable", f"{src.directory} is not a directory") from None
    except OSError as e:
        why = (e.strerror or str(e)).lower()
        raise SourceFailure("unreadable", f"directory {src.directory}: {why}") from None
    examined = count = undersized = 0
    truncated = False
    newest: tuple[float, int, str] | None = None
    small: tuple[float, int, str] | None = None
    with entries:
        for entry in entries:
            examined += 1
            if examined > src.max_entries:
                truncated = True
                break
            if not fnmatch.fnmatchcase(entry.name, src.pattern):
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:  # removed while we looked (a rotation): not a backup now
                continue
            found = (st.st_mtime, st.st_size, entry.name)
            if st.st_size < src.min_size:
                undersized += 1
                small = max(small, found) if small else found
                continue
            count += 1
            newest = max(newest, found) if newest else found
    parts = [f"{count} file(s) matching {src.pattern} of at least {src.min_size} bytes"]
    if newest:
        parts.append(f"newest {newest[2]} ({newest[1]} bytes)")
    if small and (newest is None or small[0] > newest[0]):
        parts.append(f"a newer file is below min_size: {small[2]} ({small[1]} bytes)")
    elif undersized:
        parts.append(f"{undersized} file(s) below min_size")
    if truncated:
        parts.append(f"stopped after {src.max_entries} entries (max_entries)")
    return Reading(
        last=newest[0] if newest else None,
        count=count,
        size=float(newest[1]) if newest else None,
        undersized=undersized,
        truncated=truncated,
        detail="; ".join(parts),
    )


class Files(BackupSource):
    key = "file"

    async def read(self) -> Reading:
        return await asyncio.to_thread(scan, self.settings)
