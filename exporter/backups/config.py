"""The `backups:` section: backups whose existence and age the exporter verifies.

Each item names one backup (the `backup` label), its age thresholds, how often it is checked,
and exactly one source of the last backup's time: `file` (the newest file matching a pattern
in a directory), `sql` (a query on a configured target), `pgbackrest` / `walg` (the tools' JSON
listings, from a file or a command) or `supabase` (the Management API's list of a project's
backups). Each source kind is a module of exporter/backups/ under the same key.

Only pydantic and the shared config types here: exporter/config.py imports this module, and
what only reads the config must not load the readers' libraries.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from exporter.configtypes import (
    Duration,
    FieldError,
    LabelValue,
    Model,
    at_least,
    at_most,
    ordered_pair,
)
from exporter.probes.config import SecretRef, parse_size

# A daily backup (runbook 000: `0 2 * * * npm run backup:database`; runbook 001: "Supabase
# handles daily backups"; runbook 003: "verify backup completed successfully" every day) is at
# most 24 h old just before the next one lands. Warning: the last run is 2 h late (26 h), so a
# backup that takes a while or a cron drifting by minutes never warns, a skipped run does.
# Critical: two daily runs missed (50 h), the point where a restore loses two days of data.
MAX_AGE_WARNING = 26 * 3600.0
MAX_AGE_CRITICAL = 50 * 3600.0
DEFAULT_INTERVAL = 300.0  # a backup changes daily: checking every 5 min is plenty
DEFAULT_TIMEOUT = 30.0  # `pgbackrest info` against an object store can take seconds
MIN_INTERVAL = 1.0
MiB = 1024 * 1024

Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0, le=1024**4)]
OutputCap = Annotated[int, BeforeValidator(parse_size), Field(ge=1024, le=64 * MiB)]


class FileSource(Model):
    """The newest regular file in `directory` whose name matches `pattern` and whose size is
    at least `min_size` (an empty or truncated dump does not count); its mtime is the backup
    time. At most `max_entries` directory entries are examined per check."""

    directory: Path
    pattern: str = Field("*", min_length=1, max_length=200)  # shell glob on the file name
    min_size: Size = 1
    max_entries: int = Field(10000, ge=1, le=1_000_000)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        if "/" in v:
            raise ValueError("pattern matches file names in the directory: no / in it")
        return v

    @field_validator("directory")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError(f"directory must be an absolute path (got {str(v)!r})")
        return v


class SQLSource(Model):
    """A query on a configured target returning one row: the last backup's time (timestamptz
    or Unix seconds) first, optionally its size in bytes second; no row or NULL means none."""

    target: LabelValue  # a name under `targets:`
    query: str = Field(min_length=1, max_length=10000)

    @field_validator("query")
    @classmethod
    def _one_statement(cls, v: str) -> str:
        v = v.strip().rstrip(";").strip()
        if not v:
            raise ValueError("the query is empty")
        if ";" in v:
            raise ValueError("give one statement (no ; inside the query)")
        return v


class Command(Model):
    """A program run without a shell: `argv[0]` and its arguments exactly as given."""

    argv: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        min_length=1, max_length=64
    )
    # variables set for the command on top of the exporter's environment (never logged)
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}
    max_output: OutputCap = 4 * MiB  # stdout beyond this fails the check (output_too_large)


def _argv(v: Any) -> Any:
    """`command: [pgbackrest, info, --output=json]` or the long form with `argv:`."""
    return {"argv": v} if isinstance(v, list) else v


CommandSpec = Annotated[Command, BeforeValidator(_argv)]


class ToolListing(Model):
    """JSON from `file` (written by a cron job) or from `command`'s stdout."""

    file: Path | None = None
    command: CommandSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> ToolListing:
        if (self.file is None) == (self.command is None):
            raise ValueError("give exactly one of file or command")
        return self

    def describe(self) -> str:
        if self.file is not None:
            return f"file {self.file}"
        return "command " + " ".join(self.command.argv)  # type: ignore[union-attr]


BACKUP_TYPES = ("full", "diff", "incr")


class PgBackRestSource(ToolListing):
    """`pgbackrest info --output=json`: a list of stanzas, each with its backups."""

    stanza: str | None = None  # required when the output holds several stanzas
    types: list[Literal["full", "diff", "incr"]] = list(BACKUP_TYPES)  # which backups count


class WalGSource(ToolListing):
    """`wal-g backup-list --json` (add `--detail` for finish time and sizes)."""


class SupabaseSource(Model):
    """The Management API's list of a project's backups (GET /v1/projects/{ref}/database/
    backups) with a personal access token read from env or file at every check."""

    project_ref: str = Field(pattern=r"^[a-z0-9]{1,64}$")
    token: SecretRef
    base_url: str = "https://api.supabase.com"
    max_body: OutputCap = 1 * MiB

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        parts = urllib.parse.urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http(s) URL, e.g. https://api.supabase.com")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("base_url takes no credentials, query or fragment")
        return v.rstrip("/")


# the source kinds, by the key that selects one; each has its module in exporter/backups/
# under the same key (tests/test_backups.py holds the two lists equal)
SOURCE_KINDS: dict[str, type[Model]] = {
    "file": FileSource,
    "sql": SQLSource,
    "pgbackrest": PgBackRestSource,
    "walg": WalGSource,
    "supabase": SupabaseSource,
}


class Backup(Model):
    name: LabelValue  # the `backup` label
    interval: Duration = DEFAULT_INTERVAL
    timeout: Duration = DEFAULT_TIMEOUT
    max_age_warning: Duration = MAX_AGE_WARNING
    max_age_critical: Duration = MAX_AGE_CRITICAL
    file: FileSource | None = None
    sql: SQLSource | None = None
    pgbackrest: PgBackRestSource | None = None
    walg: WalGSource | None = None
    supabase: SupabaseSource | None = None

    @model_validator(mode="after")
    def _check(self) -> Backup:
        given = [k for k in SOURCE_KINDS if getattr(self, k) is not None]
        names = ", ".join(f"{k}:" for k in SOURCE_KINDS)
        if len(given) != 1:
            raise ValueError(
                f"a backup needs exactly one source, one of the keys {names}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        with FieldError.at("interval"):
            at_least("interval", self.interval, MIN_INTERVAL, "each check reads the source")
        with FieldError.at("timeout"):
            at_least("timeout", self.timeout, 0.1, "a check needs time to run")
            at_most("timeout", self.timeout, "interval", self.interval)
        with FieldError.at("max_age_warning"):
            ordered_pair(self, "max_age_warning", "max_age_critical")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SOURCE_KINDS if getattr(self, k) is not None)

    @property
    def source(self) -> Any:
        return getattr(self, self.kind)

    def describe(self) -> str:
        src = self.source
        if isinstance(src, FileSource):
            return f"newest {src.pattern} in {src.directory} of at least {src.min_size} bytes"
        if isinstance(src, SQLSource):
            return f"query on target {src.target}"
        if isinstance(src, ToolListing):
            return f"{self.kind} JSON from {src.describe()}"
        return f"Supabase project {src.project_ref} at {src.base_url}"
