"""What every backup source kind shares: the reading it returns, the failure it raises, the
registry of kinds by config key, and the time and JSON helpers the tool listings need."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from exporter.backups.config import Backup

# why a source could not be read: the fixed set of `reason` label values
REASONS = (
    "unreadable",  # a directory or file missing or not readable
    "timeout",  # the command, request or query did not finish in time
    "exit_status",  # the command exited non-zero or was killed by a signal
    "output_too_large",  # stdout or the response body above its cap
    "invalid_output",  # not JSON, or not the documented shape
    "tool_error",  # the tool answered with an error of its own (pgBackRest stanza status)
    "auth",  # the token could not be read, or the API refused it (401/403)
    "http_status",  # any other non-2xx answer
    "connect",  # the API or database could not be reached
    "query",  # the SQL query failed
    "error",  # anything else (a bug: see the log)
)


class SourceFailure(Exception):
    """The source could not be read; `reason` is one of REASONS, the message says why (never
    a secret: it is logged and shown by the doctor)."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Reading:
    """What one check found. `last` is the newest good backup's Unix time (None: none found),
    `count` how many good backups the source lists (bounded by what it examined)."""

    last: float | None
    count: int
    size: float | None = None  # bytes of the newest good backup, where the source says
    undersized: int | None = None  # file kind: matching files below min_size (not counted)
    truncated: bool = False  # file kind: the entry cap was reached, a newer file may be missed
    detail: str = ""  # what was found, for the doctor and the log


KINDS: dict[str, type[BackupSource]] = {}


class BackupSource:
    """One source kind: made per configured backup, `read()` run by the scheduler."""

    key: ClassVar[str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "key" in cls.__dict__:
            KINDS[cls.key] = cls

    def __init__(self, backup: Backup, db: Any = None) -> None:
        self.backup = backup
        self.settings = backup.source
        self.db = db  # the target's TargetDB (sql kind only)

    async def read(self) -> Reading:
        raise NotImplementedError


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: Any, what: str) -> float:
    """An RFC 3339 / ISO 8601 string (Go's nanoseconds cut to micro; no zone = UTC) or Unix
    seconds -> Unix seconds; SourceFailure(invalid_output) naming `what` otherwise."""
    if isinstance(value, bool):
        raise SourceFailure("invalid_output", f"{what} is not a time: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise SourceFailure("invalid_output", f"{what} is not a time: {value!r}")
        return float(value)
    if isinstance(value, str):
        text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if t.tzinfo is None:
                t = t.replace(tzinfo=UTC)
            return t.timestamp()
    shown = repr(value)[:80]
    raise SourceFailure("invalid_output", f"{what} is not a time: {shown}")


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise SourceFailure("invalid_output", f"{what} is not JSON ({why})") from None


def number(value: Any) -> float | None:
    """A size field: a non-negative finite number, else None (unknown)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None
