"""The `poolers:` section: PgBouncer admin consoles the exporter reads (exporter/poolers/).

A pooler is not a target: its admin console is the pseudo-database `pgbouncer` on the pooler's
port, with its own user (one of PgBouncer's `stats_users`), and it refuses transactions and the
extended query protocol that a target's collectors run under. One PgBouncer also fronts many
databases, so it is configured once, beside the targets, and runs as its own scheduler job.

Only pydantic and the shared config types here: exporter/config.py imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from exporter.configtypes import Duration, LabelValue, Model, Ratio, ordered_pair
from exporter.secrets import register_secret

ADMIN_DATABASE = "pgbouncer"  # PgBouncer's admin console answers under this database name
DEFAULT_INTERVAL = 15.0
DEFAULT_TIMEOUT = 5.0


class PoolerSecretError(Exception):
    """The admin console's password could not be read (env unset, file unreadable)."""


class PoolerThresholds(Model):
    # runbook 000 alerts on API responses slower than 1.5 s (warning) and 3 s (critical): a
    # client that waited that long for a server connection has spent the whole budget before
    # its first query ran, so those are the waits that alert
    max_wait_warning: Duration = 1.5
    max_wait_critical: Duration = 3.0
    # server connections in use / pool_size: at 0.8 a burst fills the pool, at 0.95 (a pool of
    # up to 20 with every server busy) the next client queues
    saturation_warning: Ratio = 0.8
    saturation_critical: Ratio = 0.95

    @model_validator(mode="after")
    def _ordered(self) -> PoolerThresholds:
        ordered_pair(self, "max_wait_warning", "max_wait_critical")
        ordered_pair(self, "saturation_warning", "saturation_critical")
        return self


class Pooler(Model):
    name: LabelValue  # the `pooler` label
    kind: str = Field("pgbouncer", pattern="^pgbouncer$")  # the only one with a console to read
    # the admin console: host, port, user (in stats_users or admin_users); dbname pgbouncer
    dsn: str = Field(min_length=1)
    password_env: str | None = Field(None, min_length=1)
    password_file: Path | None = None
    interval: Duration = DEFAULT_INTERVAL
    timeout: Duration = DEFAULT_TIMEOUT  # connect plus the SHOW commands
    # pools served, the ones with waiting then active clients first; the rest are counted in
    # runbook_pgbouncer_pools_skipped
    max_pools: int = Field(100, ge=1, le=10000)
    thresholds: PoolerThresholds = PoolerThresholds()

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str) -> str:
        params = _params(v)
        if params.get("password"):
            register_secret(params["password"])
        if params.get("dbname", ADMIN_DATABASE) != ADMIN_DATABASE:
            raise ValueError(
                f"the admin console is the database {ADMIN_DATABASE!r}: "
                f"set dbname={ADMIN_DATABASE} (or leave it out)"
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> Pooler:
        if self.password_env and self.password_file:
            raise ValueError("give at most one of password_env or password_file")
        if not (self.interval >= 0.1):
            raise ValueError(f"interval ({self.interval:g}s) must be at least 0.1s")
        if not (0 < self.timeout <= self.interval):
            raise ValueError(
                f"timeout ({self.timeout:g}s) must be above 0 and not exceed interval "
                f"({self.interval:g}s)"
            )
        return self

    def conninfo(self) -> str:
        """The DSN with dbname and the password filled in. Never log this."""
        from psycopg.conninfo import make_conninfo

        params = _params(self.dsn)
        params["dbname"] = ADMIN_DATABASE
        password = None
        if self.password_env:
            password = os.environ.get(self.password_env)
            if password is None:
                raise PoolerSecretError(f"environment variable {self.password_env} is not set")
        elif self.password_file:
            try:
                password = self.password_file.read_text().strip()
            except OSError as e:
                raise PoolerSecretError(
                    f"cannot read password_file {self.password_file}: {e.strerror}"
                ) from None
        if password:
            register_secret(password)
            params["password"] = password
        return make_conninfo("", **params)


def _params(dsn: str) -> dict[str, str]:
    """libpq's reading of the DSN; the error never quotes it (it may hold the password)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except Exception:
        raise ValueError(
            "the DSN cannot be parsed (libpq key=value or a postgresql:// URI)"
        ) from None
