"""`sql:` a query on a configured target that returns the last backup (a table the backup
script writes, e.g. `SELECT max(finished_at), ... FROM ops.backup_runs WHERE ok`).

It runs on the target's own session (exporter/db.py TargetDB) like a collector run: one
read-only transaction under the target's statement_timeout and lock_timeout, no session
state, so it works through transaction-mode poolers and costs no extra connection. A
short-lived session per check would open a connection (and a pooler slot) every few minutes
for one row and would not share the target's reconnect back-off.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg

from exporter.backups.base import BackupSource, Reading, SourceFailure, number, parse_time
from exporter.config import ConfigError
from exporter.db import TargetUnavailable, describe_error


def _value(v: Any) -> Any:
    return float(v) if isinstance(v, Decimal) else v


def parse_row(row: tuple | None) -> Reading:
    if row is None or not row or row[0] is None:
        return Reading(None, 0, detail="the query found no backup")
    first = row[0]
    if isinstance(first, datetime):
        t = first if first.tzinfo else first.replace(tzinfo=UTC)
        last = t.timestamp()
    else:
        last = parse_time(_value(first), "the query's first column")
    size = number(_value(row[1])) if len(row) > 1 and row[1] is not None else None
    return Reading(last, 1, size=size, detail="the query returned the last backup")


class SQL(BackupSource):
    key = "sql"

    async def read(self) -> Reading:
        if self.db is None:
            raise SourceFailure("error", f"no session for target {self.settings.target}")
        try:
            async with self.db.connection(self.backup.timeout) as conn:
                cur = await conn.execute(self.settings.query)
                if cur.description is None:
                    raise SourceFailure("query", "the statement returns no rows")
                row = await cur.fetchone()
        except (TargetUnavailable, ConfigError) as e:
            raise SourceFailure("connect", str(e)) from None
        except psycopg.errors.QueryCanceled as e:
            raise SourceFailure("timeout", describe_error(e)) from None
        except psycopg.OperationalError as e:
            raise SourceFailure("connect", describe_error(e)) from None
        except psycopg.Error as e:
            raise SourceFailure("query", describe_error(e)) from None
        return parse_row(row)
