"""A small pool of PostgreSQL sessions per target: reused; each run one read-only transaction
bounded by timeouts.

A run takes an idle session of its target, or opens one more when every open session is busy
and fewer than the target's `max_sessions` (default 3) are open, or waits for one to come back.
A collector whose statement is slow (a queue table at 5M rows, a locked relation) therefore
holds one session and the other collectors go on with theirs; on a quiet target the runs,
staggered, mostly share a single session. The wait for a session is measured apart from the
run's own work (`runbook_collector_wait_seconds`), and a run that finds no free session before
its budget is spent fails saying so. `up` is 1 while the exporter holds a working session and
turns 0 on the first failure of the server (a broken connection, no answer):

- A broken connection is dropped with the target's idle sessions (they share its fate: a
  restarted server ended them all) and a background task reconnects with a short, jittered
  exponential backoff (0.5 s doubling to BACKOFF_MAX), independent of the collectors'
  intervals, so `up` is back within seconds of the server; collector runs meanwhile fail fast
  with the reason instead of each waiting on a connect.
- A run that gets no answer within its timeout (a frozen server, a dead network path) has its
  socket shut down just before the scheduler's own timeout would cancel it. Cancelling instead
  would make psycopg send a cancel request to the unresponsive server and wait up to 10 s for
  it, with `up` still 1; the shutdown ends the run at once, `up` turns 0, and the server-side
  session ends by itself when the server resumes (it finds the socket closed).
- Opening one more session can fail while the open ones work (the server is at
  max_connections): the target stays up, the pool stops growing for GROW_BACKOFF seconds and
  the run waits for a session of those open.

Every run is one read-only transaction whose timeouts are its own (`run_transaction`:
`set_config(..., true)`, i.e. SET LOCAL) and no statement is ever prepared, so the exporter
works through a pooler in transaction mode (PgBouncer, Supabase's Supavisor on port 6543),
which hands each transaction to whichever server connection is free: a session setting would
land on one of them -- and stay there for the application's sessions -- and a prepared
statement would be missing on the next one. With `pooler: transaction` the session itself is
left exactly as the server made it; otherwise it also carries the same limits as session
settings, so a statement sent outside a run is bounded too. A collector that catches a failed
statement and goes on wraps it in `savepoint`, since a failure aborts the run's transaction.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from exporter.config import Target
from exporter.secrets import redact

log = logging.getLogger("exporter.db")
APPLICATION_NAME = "runbook-exporter"
# reconnect delays: BACKOFF_MIN doubling to BACKOFF_MAX, each drawn from [delay/2, delay] so
# the exporters of a fleet do not all knock at once when a server comes back
BACKOFF_MIN = 0.5
BACKOFF_MAX = 2.0
# a run waits at most this share of its timeout for a free session, then fails saying so
MAX_WAIT_SHARE = 0.5
# after a failed attempt to open one more session, the pool keeps the sessions it has this long
GROW_BACKOFF = 30.0
# a session beyond the one most recently used that nobody needed for this long is closed: a burst
# of overlapping runs (e.g. every collector waking after a reconnect) does not hold max_sessions
# connections of a small plan's limit for ever
IDLE_CLOSE = 300.0
# the watchdog fires this much (at most 10 % of the budget) before the run's timeout, so the
# run ends on its own terms before the scheduler cancels it
WATCHDOG_MARGIN = 0.5
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


def _ms(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


def _limits(target: Target) -> dict[str, str]:
    """The settings every exporter statement runs under (a statement_timeout or lock_timeout
    under 1 ms cannot happen: the config refuses it, as PostgreSQL would read it as "off")."""
    return {
        "statement_timeout": _ms(target.statement_timeout),
        "lock_timeout": _ms(target.lock_timeout),
        # a run left open (a frozen exporter) ends on the server instead of holding locks,
        # snapshots or, behind a pooler, a server connection
        "idle_in_transaction_session_timeout": _ms(max(target.collect_timeout, 1)),
    }


def _set_config(settings: dict[str, str], is_local: bool) -> sql.Composed:
    return sql.SQL("SELECT {}").format(
        sql.SQL(", ").join(
            sql.SQL("set_config({}, {}, {})").format(
                sql.Literal(name), sql.Literal(value), sql.Literal(is_local)
            )
            for name, value in settings.items()
        )
    )


async def open_connection(
    target: Target, application_name: str = APPLICATION_NAME
) -> psycopg.AsyncConnection:
    """A new session to the target, set up the way every exporter statement expects it:
    autocommit, marked statements, never prepared; through no pooler or one in session mode
    also read-only and bounded by the target's timeouts as session settings. Raises
    ConfigError when the DSN or password cannot be resolved, the connection error otherwise
    (see describe_error); a session whose setup failed is closed, not leaked."""
    conn = await psycopg.AsyncConnection.connect(
        target.conninfo(),
        autocommit=True,
        application_name=application_name,
        # libpq takes whole seconds; rounding down could give 0, which means "wait forever"
        connect_timeout=max(1, math.ceil(target.connect_timeout)),
        cursor_factory=MarkedCursor,
        # psycopg prepares a statement run 5 times; a transaction-mode pooler (PgBouncer before
        # 1.21, Supavisor) sends the next execution to a server that never saw it prepared
        prepare_threshold=None,
    )
    try:
        if target.pooler == "transaction":
            # nothing to set on a session the pooler shares out; the query makes the pooler
            # reach a server, so `up` means the database answers, not only the pooler
            await conn.execute("SELECT 1")
        else:
            # set_config rather than the `options` startup parameter: poolers such as pgbouncer
            # and Supabase's pooler reject `options`, but accept these in session mode
            await conn.execute(
                _set_config({**_limits(target), "default_transaction_read_only": "on"}, False)
            )
    except Exception:
        with suppress(Exception):
            await conn.close()
        raise
    return conn


def _usable(conn: psycopg.AsyncConnection) -> bool:
    return not (conn.closed or conn.broken)


@asynccontextmanager
async def run_transaction(
    conn: psycopg.AsyncConnection, target: Target
) -> AsyncIterator[psycopg.AsyncConnection]:
    """One read-only transaction bounded by the target's timeouts set for it alone
    (`set_config(..., true)` is SET LOCAL): what one collector run or doctor check sends, in
    one round trip to start and one to end. A transaction-mode pooler keeps the transaction
    on one server connection, so the limits hold for every statement in it and vanish with
    it. Rolled back when the body raises (a cancelled run's connection is dropped instead)."""
    begin = sql.SQL("BEGIN READ ONLY {}; {}").format(
        sql.SQL(SQL_MARKER), _set_config(_limits(target), True)
    )
    try:
        await conn.execute(begin)
        yield conn
    except BaseException as e:
        if not isinstance(e, asyncio.CancelledError) and _usable(conn):
            with suppress(psycopg.Error):
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


@asynccontextmanager
async def savepoint(conn: psycopg.AsyncConnection) -> AsyncIterator[None]:
    """Statements whose failure the caller handles and goes on from (a queue whose table is
    locked, a retry): in a run's transaction a failed statement would fail every later one,
    so these run under a savepoint rolled back on failure. Outside a transaction (autocommit,
    e.g. a collector called directly) each statement stands alone and nothing is needed."""
    if conn.info.transaction_status == TransactionStatus.IDLE:
        yield
        return
    await conn.execute("SAVEPOINT runbook_part")
    try:
        yield
    except BaseException as e:
        if not isinstance(e, asyncio.CancelledError) and _usable(conn):
            with suppress(psycopg.Error):
                await conn.execute(
                    "ROLLBACK TO SAVEPOINT runbook_part; RELEASE SAVEPOINT runbook_part"
                )
        raise
    await conn.execute("RELEASE SAVEPOINT runbook_part")


def describe_error(e: BaseException) -> str:
    """The first line of a connection error, secrets redacted (it may name host and user,
    never the password), for logs, metrics and the doctor."""
    text = str(e).strip()
    return redact(text.splitlines()[0] if text else repr(e))


class TargetUnavailable(Exception):
    """The target cannot be reached now; the message says why and when it is retried."""


def jittered(delay: float) -> float:
    return random.uniform(delay / 2, delay)


def shutdown_socket(conn: psycopg.AsyncConnection) -> None:
    """End the connection's TCP (or Unix) socket in both directions without closing its file
    descriptor, which psycopg still watches: whatever waits on it wakes with an error at once,
    and nothing is sent to the server that it would have to answer."""
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError:  # already closed
        return
    dup = os.dup(fd)
    try:
        with socket.socket(fileno=dup) as sock:
            dup = -1  # owned by sock now
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # not connected any more: nothing to end
        pass
    finally:
        if dup >= 0:
            os.close(dup)


class TargetDB:
    """The sessions of one target: up to `target.max_sessions`, opened on demand."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.max_sessions = max(1, target.max_sessions)
        self._idle: list[psycopg.AsyncConnection] = []  # oldest given back first
        self._idle_since: dict[int, float] = {}  # id(session) -> monotonic time given back
        self._open = 0  # sessions idle, lent to a run, or being opened
        self._changed = asyncio.Condition()  # a session came back or a slot was freed
        self._grow_after = 0.0  # monotonic time before which the pool does not grow
        self.up = 0
        self.last_error: str | None = None
        self._backoff = BACKOFF_MIN
        self._next_attempt = 0.0
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False
        self._connected = asyncio.Event()  # set and replaced on every new session

    @property
    def conn(self) -> psycopg.AsyncConnection | None:
        """An idle session, None when none is open (for tests and the reload's checks)."""
        return self._idle[-1] if self._idle else None

    @property
    def sessions(self) -> int:
        """Sessions open now (idle, lent to a run, or being opened)."""
        return self._open

    @asynccontextmanager
    async def connection(
        self, budget: float, on_wait: Callable[[float], None] | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection]:
        """A session of the target for one collector run, inside the run's transaction.
        `budget` is the run's timeout as the scheduler enforces it: a run still waiting on the
        server when it is nearly spent loses its session (see the module docstring) and fails
        with a TargetUnavailable saying so. `on_wait` gets the seconds spent waiting for a
        free session or opening one, before the run's own work starts."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + budget - min(WATCHDOG_MARGIN, budget * 0.1)
        try:
            # at most half the budget waiting, so a run that gets a session has time to run
            conn = await self._acquire(started + budget * MAX_WAIT_SHARE, budget, deadline)
        finally:
            if on_wait is not None:
                on_wait(loop.time() - started)
        expired = dropped = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self.up = 0
            shutdown_socket(conn)

        watchdog = loop.call_at(deadline, expire)
        try:
            async with run_transaction(conn, self.target):
                yield conn
        except BaseException as e:
            if expired:
                reason = f"no answer from the server within {budget:g}s; connection closed"
                dropped = True
                await self._drop(conn, reason)
                if isinstance(e, Exception):
                    raise TargetUnavailable(reason) from None
                raise
            if not isinstance(e, psycopg.OperationalError | asyncio.CancelledError):
                raise
            # QueryCanceled (statement_timeout) and LockNotAvailable leave the
            # connection usable; anything that broke it or cut a query short does not
            if isinstance(e, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
                raise
            if isinstance(e, asyncio.CancelledError):  # timed out or stopping: not news
                dropped = True
                await self._drop(conn, "run cancelled", quiet=True)
            elif conn.broken or conn.closed:
                dropped = True
                await self._drop(conn, describe_error(e))
            raise
        finally:
            watchdog.cancel()
            if not dropped:
                if expired:  # the run finished without touching the dead socket again
                    dropped = True
                    await self._drop(conn, f"no answer from the server within {budget:g}s")
                else:
                    await self._release(conn)

    # --- taking and giving back sessions ---------------------------------------------

    async def _acquire(
        self, deadline: float, budget: float, open_by: float
    ) -> psycopg.AsyncConnection:
        """An idle session, else a new one (opened by `open_by`) while fewer than max_sessions
        are open, else the first one given back before `deadline`."""
        loop = asyncio.get_running_loop()
        while True:
            async with self._changed:
                while True:
                    while self._idle:
                        conn = self._idle.pop()
                        self._idle_since.pop(id(conn), None)
                        if _usable(conn):
                            return conn
                        self._open -= 1
                        await _close_quietly(conn)
                    if self.up == 0 and self._reconnect is not None:
                        wait = max(self._next_attempt - time.monotonic(), 0)
                        raise TargetUnavailable(
                            f"not connected ({self.last_error}); retrying in {wait:.1f}s"
                        )
                    if self._open == 0 or (
                        self._open < self.max_sessions and time.monotonic() >= self._grow_after
                    ):
                        self._open += 1  # the slot is ours while we connect, outside the lock
                        first = self.up == 0
                        break
                    try:
                        async with asyncio.timeout(max(deadline - loop.time(), 0)):
                            await self._changed.wait()
                    except TimeoutError:
                        raise TargetUnavailable(
                            f"no free session within {budget * MAX_WAIT_SHARE:g}s: all"
                            f" {self._open} sessions of the target (max_sessions) were busy"
                        ) from None
            conn = await self._open_session(first, open_by, budget)
            if conn is not None:
                return conn
            # one more session was refused: wait for one of the open ones instead

    async def _open_session(
        self, first: bool, open_by: float, budget: float
    ) -> psycopg.AsyncConnection | None:
        """Open the session whose slot the caller reserved, giving up at `open_by` (a server
        that accepts connections but never answers would otherwise hold the run until the
        scheduler cuts it, with no reason). The first session (none worked before) fails the
        way a lost target does: `up` 0 and the background reconnect; one more beside working
        ones only makes the pool stop growing for a while (None)."""
        try:
            async with asyncio.timeout_at(open_by):
                conn = await (self._attempt() if first else open_connection(self.target))
        except BaseException as e:
            async with self._changed:
                self._open -= 1
                self._changed.notify()
            if isinstance(e, TimeoutError):  # ours: the server did not answer in time
                reason = f"no answer from the server within {budget:g}s opening a session"
                self._grow_after = time.monotonic() + GROW_BACKOFF
                if first:
                    self._attempt_failed(reason)
                raise TargetUnavailable(reason) from None
            if first or not isinstance(e, Exception):
                raise
            self._grow_after = time.monotonic() + GROW_BACKOFF
            log.warning(
                "cannot open another session to the target; using the open ones",
                extra={
                    "target": self.target.name,
                    "sessions": self._open,
                    "error": describe_error(e),
                },
            )
            return None
        if first or self.up == 0:
            self._connected_now()
        return conn

    async def _release(self, conn: psycopg.AsyncConnection) -> None:
        """Give a session back after a run that left it usable; close the ones idle longer
        than IDLE_CLOSE (never the last one)."""
        stale: list[psycopg.AsyncConnection] = []
        async with self._changed:
            if self._closing or not _usable(conn):
                self._open -= 1
                await _close_quietly(conn)
            else:
                self._idle.append(conn)
                self._idle_since[id(conn)] = time.monotonic()
                if self.up == 0:  # its run just talked to the server: the target answers
                    self._connected_now()
                stale = self._take_stale()
            self._changed.notify()
        for c in stale:
            await _close_quietly(c)

    def _take_stale(self) -> list[psycopg.AsyncConnection]:
        """Idle sessions unused for IDLE_CLOSE, oldest first, keeping the newest (call with the
        lock held). Runs take the newest idle session, so an extra one ages only when no two
        runs overlap any more."""
        now, stale = time.monotonic(), []
        while (
            len(self._idle) > 1 and now - self._idle_since.get(id(self._idle[0]), now) > IDLE_CLOSE
        ):
            conn = self._idle.pop(0)
            self._idle_since.pop(id(conn), None)
            self._open -= 1
            stale.append(conn)
        return stale

    def _usable(self) -> bool:
        return any(_usable(c) for c in self._idle)

    async def _attempt(self) -> psycopg.AsyncConnection:
        """One connection attempt; on failure `up` is 0, the background reconnect is scheduled,
        and the TargetUnavailable says why (never the password)."""
        try:
            return await open_connection(self.target)
        except Exception as e:
            self._attempt_failed(describe_error(e))
            raise TargetUnavailable(f"cannot connect: {self.last_error}") from None

    def _attempt_failed(self, reason: str) -> None:
        """`up` 0, the next attempt backed off, the background reconnect scheduled."""
        t = self.target
        self.up = 0
        self.last_error = reason
        self._next_attempt = time.monotonic() + jittered(self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        self._start_reconnect()
        log.warning(
            "cannot connect to target",
            extra={"target": t.name, "dsn": t.safe_dsn(), "error": reason},
        )

    async def reconnected(self) -> None:
        """Completes when the next new session is installed (a job's wake, scheduler.Job)."""
        await self._connected.wait()

    def _connected_now(self) -> None:
        """The target answers again (or for the first time): `up` 1, wake the jobs."""
        self.up = 1
        woken, self._connected = self._connected, asyncio.Event()
        woken.set()
        self._backoff = BACKOFF_MIN
        self._grow_after = 0.0
        self.last_error = None
        t = self.target
        log.info("connected to target", extra={"target": t.name, "dsn": t.safe_dsn()})

    def _start_reconnect(self) -> None:
        if self._reconnect is None and not self._closing:
            self._reconnect = asyncio.get_running_loop().create_task(
                self._reconnect_loop(), name=f"reconnect {self.target.name}"
            )

    async def _reconnect_loop(self) -> None:
        """Reconnect in the background until it works, so `up` recovers within BACKOFF_MAX of
        the server whatever the collectors' intervals. The attempt runs outside the lock (runs
        meanwhile fail at once saying why, rather than queue behind a connect to a server that
        does not answer); the new session joins the idle ones under it."""
        try:
            while not self._closing:
                await asyncio.sleep(max(self._next_attempt - time.monotonic(), 0))
                if self.up and self._open:
                    return
                try:
                    conn = await self._attempt()
                except TargetUnavailable:
                    continue
                async with self._changed:
                    if self._closing or self._open >= self.max_sessions:
                        await _close_quietly(conn)
                        return
                    self._open += 1
                    self._idle.append(conn)
                    self._idle_since[id(conn)] = time.monotonic()
                    self._connected_now()
                    self._changed.notify()
                    return
        finally:
            self._reconnect = None

    async def _drop(self, conn: psycopg.AsyncConnection, reason: str, quiet: bool = False) -> None:
        """Close a session a run cannot give back. Unless `quiet` (a run cancelled by its
        timeout or a stop: the session is only unusable, not the server), the server is in
        doubt: the idle sessions go too, `up` turns 0 and the background reconnect starts."""
        async with self._changed:
            self._open -= 1
            closing = [conn]
            if not quiet:
                closing += self._idle
                self._open -= len(self._idle)
                self._idle, self._idle_since = [], {}
            self._changed.notify_all()
        for c in closing:
            # close() only sends Terminate and frees the socket: it does not wait on the server
            await _close_quietly(c)
        if quiet and self._open > 0:
            return  # the target's other sessions still work
        self.up = 0
        self.last_error = reason
        if self._closing:
            return
        if not quiet:
            log.warning(
                "lost the connection to target",
                extra={"target": self.target.name, "error": reason},
            )
        self._backoff = BACKOFF_MIN
        self._next_attempt = time.monotonic()  # first try at once, then back off
        self._start_reconnect()

    async def close(self) -> None:
        self._closing = True
        task, self._reconnect = self._reconnect, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        async with self._changed:
            idle, self._idle, self._idle_since = self._idle, [], {}
            self._open -= len(idle)
        for c in idle:
            await _close_quietly(c)
        self.up = 0
        self.last_error = "exporter stopping"


async def _close_quietly(conn: psycopg.AsyncConnection) -> None:
    with suppress(Exception):  # closing a dead connection may fail; it is gone anyway
        await conn.close()
