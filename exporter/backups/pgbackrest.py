"""`pgbackrest:` the newest good backup in `pgbackrest info --output=json`.

The shape (pgBackRest's documented, stable JSON): a list of stanzas, each with `name`,
`status` {`code`, `message`} and `backup`, a list of backups oldest first, each with `label`,
`type` (full, diff, incr), `timestamp` {`start`, `stop`} in Unix seconds, `info` {`size`,
`delta`, `repository` {`size`, `delta`}} in bytes and, from pgBackRest 2.36, `error` (true
when a page checksum error was found). The backup time is `timestamp.stop`; the size is
`info.repository.size` (what the backup set takes in the repository). Status code 0 is ok and
2 is "no valid backups" (read as none found); any other code is the tool's own error.
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
from exporter.backups.config import PgBackRestSource

OK, NO_VALID_BACKUP = 0, 2


def _stanza(doc: Any, wanted: str | None) -> dict:
    if not isinstance(doc, list) or not all(isinstance(s, dict) for s in doc):
        raise SourceFailure(
            "invalid_output", "not pgBackRest info JSON: expected a list of stanzas"
        )
    names = [str(s.get("name")) for s in doc]
    if wanted is not None:
        for s in doc:
            if s.get("name") == wanted:
                return s
        raise SourceFailure("tool_error", f"no stanza {wanted!r} in the output (has {names[:10]})")
    if len(doc) != 1:
        raise SourceFailure(
            "invalid_output",
            f"the output holds {len(doc)} stanzas {names[:10]}: name one (stanza:)",
        )
    return doc[0]


def parse(doc: Any, src: PgBackRestSource) -> Reading:
    st = _stanza(doc, src.stanza)
    name = st.get("name")
    status = st.get("status") if isinstance(st.get("status"), dict) else {}
    code = status.get("code", OK)
    if code not in (OK, NO_VALID_BACKUP):
        message = str(status.get("message", ""))[:200]
        raise SourceFailure("tool_error", f"stanza {name}: status {code} ({message})")
    backups = st.get("backup", [])
    if not isinstance(backups, list):
        raise SourceFailure("invalid_output", f"stanza {name}: `backup` is not a list")
    good: list[tuple[float, dict]] = []
    errored = 0
    for i, b in enumerate(backups):
        if not isinstance(b, dict) or b.get("type") not in src.types:
            continue
        if b.get("error") is True:
            errored += 1
            continue
        stamp = b.get("timestamp")
        stop = stamp.get("stop") if isinstance(stamp, dict) else None
        good.append((parse_time(stop, f"stanza {name} backup[{i}].timestamp.stop"), b))
    if not good:
        note = f"; {errored} with errors" if errored else ""
        return Reading(None, 0, detail=f"stanza {name}: no {'/'.join(src.types)} backup{note}")
    last, newest = max(good, key=lambda g: g[0])
    info = newest.get("info") if isinstance(newest.get("info"), dict) else {}
    repo = info.get("repository") if isinstance(info.get("repository"), dict) else {}
    detail = (
        f"stanza {name}: {len(good)} backup(s), newest {newest.get('label')} ({newest.get('type')})"
    )
    if errored:
        detail += f"; {errored} with errors not counted"
    return Reading(last, len(good), size=number(repo.get("size")), detail=detail)


class PgBackRest(BackupSource):
    key = "pgbackrest"

    async def read(self) -> Reading:
        data = await listing(self.settings, self.backup.timeout)
        return parse(parse_json(data, "pgBackRest info output"), self.settings)
