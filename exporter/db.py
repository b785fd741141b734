"""One PostgreSQL connection per target: reused, autocommit, read-only, bounded by timeouts.

Collectors of a target take turns on the connection (an asyncio lock). A broken or timed-out
connection is closed and reopened on the next run, with exponential backoff so an unreachable
database is not hammered; `up` turns 0 on the first failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg

from exporter.config import Target
from exporter.secrets import redact

log = logging.getLogger("exporter.db")
APPLICATION_NAME = "runbook-exporter"
BACKOFF_MAX = 30.0
# Appended to every statement the exporter sends, so the statements collector can leave the
# exporter's own work out of pg_stat_statements (which keeps trailing comments; PostgreSQL 18
# drops leading ones).
SQL_MARKER = "/* runbook-exporter */"


class MarkedCursor(psycopg.AsyncCursor):
    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> MarkedCursor:
        if isinstance(query, str):
            query = f"{query}\n{SQL_MARKER}"
        elif isinstance(query, bytes):
            query = query + b"\n" + SQL_MARKER.encode()
        elif isinstance(query, psycopg.sql.Composable):
            query = query + psycopg.sql.SQL("\n" + SQL_MARKER)
        return await super().execute(query, params, **kwargs)


async def open_connection(
    target: Target, application_name: str = APPLICATION_NAME
) -> psycopg.AsyncConnection:
    """A new session to the target, set up the way every exporter statement expects it:
    autocommit, marked statements, read-only, bounded by the target's timeouts. Raises
    ConfigError when the DSN or password cannot be resolved, the connection error otherwise
    (see describe_error); a session whose setup failed is closed, not leaked."""
    conn = await psycopg.AsyncConnection.connect(
        target.conninfo(),
        autocommit=True,
        application_name=application_name,
        connect_timeout=int(target.connect_timeout),
        cursor_factory=MarkedCursor,
    )
    try:
        # SET rather than the `options` startup parameter: poolers such as pgbouncer and
        # Supabase's pooler reject `options`, but accept these in session mode
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false),"
            " set_config('lock_timeout', %s, false),"
            " set_config('default_transaction_read_only', 'on', false),"
            " set_config('idle_in_transaction_session_timeout', %s, false)",
            (
                f"{int(target.statement_timeout * 1000)}ms",
                f"{int(target.lock_timeout * 1000)}ms",
                f"{int(max(target.collect_timeout, 1) * 1000)}ms",
            ),
        )
    except Exception:
        with suppress(Exception):
            await conn.close()
        raise
    return conn


def describe_error(e: BaseException) -> str:
    """The first line of a connection error, secrets redacted (it may name host and user,
    never the password), for logs, metrics and the doctor."""
    text = str(e).strip()
    return redact(text.splitlines()[0] if text else repr(e))


class TargetUnavailable(Exception):
    """The target cannot be reached now; the message says why and when it is retried."""


class TargetDB:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.conn: psycopg.AsyncConnection | None = None
        self.lock = asyncio.Lock()
        self.up = 0
        self.last_error: str | None = None
        self._backoff = 1.0
        self._next_attempt = 0.0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.lock:
            conn = await self._ensure()
            try:
                yield conn
            except (psycopg.OperationalError, asyncio.CancelledError, TimeoutError) as e:
                # QueryCanceled (statement_timeout) and LockNotAvailable leave the
                # connection usable; anything that broke it or cut a query short does not
                if isinstance(e, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
                    raise
                if conn.broken or conn.closed or not isinstance(e, psycopg.OperationalError):
                    await self._drop(redact(str(e)) or type(e).__name__)
                raise

    async def _ensure(self) -> psycopg.AsyncConnection:
        if self.conn is not None and not self.conn.closed and not self.conn.broken:
            return self.conn
        if self.conn is not None:
            await self._drop("connection lost")
        now = time.monotonic()
        if now < self._next_attempt:
            raise TargetUnavailable(
                f"not connected ({self.last_error}); retrying in {self._next_attempt - now:.0f}s"
            )
        t = self.target
        try:
            conn = await open_connection(t)
        except Exception as e:
            self.up = 0
            self.last_error = describe_error(e)
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            log.warning(
                "cannot connect to target",
                extra={"target": t.name, "dsn": t.safe_dsn(), "error": self.last_error},
            )
            raise TargetUnavailable(f"cannot connect: {self.last_error}") from None
        self.conn = conn
        self.up = 1
        self._backoff = 1.0
        self.last_error = None
        log.info("connected to target", extra={"target": t.name, "dsn": t.safe_dsn()})
        return conn

    async def _drop(self, reason: str) -> None:
        self.up = 0
        self.last_error = reason
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                async with asyncio.timeout(2):
                    await conn.close()
            except Exception:  # closing a dead connection may fail; it is gone either way
                pass

    async def close(self) -> None:
        await self._drop("exporter stopping")
