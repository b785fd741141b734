"""One HTTP/1.1 connection of the server: h11 parsing, limits, deadlines and flow control.

- Deadlines: a request (headers and body), and a TLS handshake, must arrive within
  `read_timeout`, and an answer must be read by the client within `read_timeout` too; a
  keep-alive connection is closed after `idle_timeout` without a request (the server's sweep
  enforces them). Headers are capped at `max_header_bytes`, bodies at `max_body_bytes`; a
  client that pipelines requests without reading the answers is not read from until it does
  (asyncio's write flow control).
- TLS from `--web.config.file` (exporter/webconfig.py): the handshake is started on the
  plaintext transport as the connection is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import h11

from exporter.webconfig import WebConfig

if TYPE_CHECKING:
    from exporter.server import HTTPServer

TEXT = b"text/plain; charset=utf-8"
REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class Connection(asyncio.Protocol):
    """One client connection: h11 parses, handlers answer from memory.

    What a complete request gets is `_dispatch`'s to decide (exporter/server.py); this class
    reads requests within the limits and writes the answers."""

    def __init__(self, server: HTTPServer) -> None:
        self.srv = server
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=server.limits.max_header_bytes
        )
        self.phase = "idle"  # idle | reading | busy (a handler runs) | closed
        self.deadline = 0.0
        self.request: h11.Request | None = None
        self.body_bytes = 0
        self.web = WebConfig()
        self.handshaking = False
        self.write_paused = False  # the client is not reading what we wrote
        self.write_deadline = 0.0

    # --- transport events -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        srv = self.srv
        if not srv.admit(self):
            transport.abort()
            self.phase = "closed"
            return
        _no_delay(transport)
        self.deadline = time.monotonic() + srv.limits.read_timeout
        self.web = srv.web.current()
        if self.web.tls is not None:
            self.phase, self.handshaking = "reading", True
            transport.pause_reading()  # no plaintext reaches us before the handshake
            srv.loop.create_task(self._start_tls(self.web.tls))

    async def _start_tls(self, ctx: ssl.SSLContext) -> None:
        try:
            tls = await self.srv.loop.start_tls(
                self.transport,  # type: ignore[arg-type]
                self,
                ctx,
                server_side=True,
                ssl_handshake_timeout=self.srv.limits.read_timeout,
            )
        except (Exception, asyncio.CancelledError):  # handshake failed, timed out, reset
            self._forget()  # start_tls closed the transport; no connection_lost follows
            return
        if self.phase == "closed" or tls is None:
            if tls is not None:
                tls.abort()
            return
        self.transport, self.handshaking = tls, False
        self.phase = "idle"
        if self.h11.trailing_data[0]:  # decrypted before start_tls returned (see below)
            self.phase = "reading"
            self._advance()

    def data_received(self, data: bytes) -> None:
        if self.handshaking:
            # asyncio hands over the first decrypted bytes as the handshake completes, before
            # start_tls returns the TLS transport: keep them until we can answer over it
            self.h11.receive_data(data)
            return
        if self.phase == "idle":
            self.phase = "reading"
            self.deadline = time.monotonic() + self.srv.limits.read_timeout
        self.h11.receive_data(data)
        if self.phase != "busy":
            self._advance()

    def eof_received(self) -> bool | None:
        self.h11.receive_data(b"")
        if self.phase != "busy":
            self._advance()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    # Flow control: a client that pipelines requests without reading the answers would
    # otherwise make us buffer one exposition per request. Past asyncio's high-water mark
    # we stop reading and answering until its buffer drains (or the write deadline cuts it).
    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.phase not in ("busy", "closed") and self.transport is not None:
            self.transport.resume_reading()
            self._advance()

    def unsent(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _forget(self) -> None:
        self.phase = "closed"
        self.srv.forget(self)

    def drop(self) -> None:
        """Close now (deadline passed, evicted, server stopping)."""
        self.phase = "closed"
        if self.transport is not None:
            self.transport.abort()
        self.srv.forget(self)

    # --- requests --------------------------------------------------------------------

    def _advance(self) -> None:
        """Feed parsed events to the handlers until h11 needs more data or a handler waits."""
        while self.phase not in ("busy", "closed") and not self.write_paused:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                self._error(e.error_status_hint, "Bad request\n")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            kind = type(event)
            if kind is h11.Request:
                self.request, self.body_bytes = event, 0
                # h11 caps headers still arriving; this catches a head that came whole
                size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > self.srv.limits.max_header_bytes:
                    self._error(431, "Request headers too large\n")
                    return
                length = header(event, b"content-length")
                if length and (
                    not length.isdigit() or int(length) > self.srv.limits.max_body_bytes
                ):
                    self._error(413, "Request body too large\n")
                    return
            elif kind is h11.Data:
                self.body_bytes += len(event.data)
                if self.body_bytes > self.srv.limits.max_body_bytes:
                    self._error(413, "Request body too large\n")
                    return
            elif kind is h11.EndOfMessage:
                self.phase = "busy"
                self.srv.evictable.pop(self, None)
                self._dispatch()
            elif kind is h11.ConnectionClosed:
                self._close()
                return

    def _dispatch(self) -> None:
        """Answer `self.request`, now complete: `_respond` or `_error` now, or `_wait`."""
        raise NotImplementedError

    # --- responses -------------------------------------------------------------------

    def _respond(
        self,
        status: int,
        body: bytes,
        extra: tuple[tuple[bytes, bytes], ...] = (),
        ctype: bytes = TEXT,
    ) -> None:
        if self.phase == "closed" or self.transport is None:
            return
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            *extra,
            *self.web.headers,
        ]
        try:
            out = self.h11.send(
                h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))
            )
            if self.request is None or self.request.method != b"HEAD":
                out += self.h11.send(h11.Data(data=body))  # type: ignore[operator]
            # one write: headers, body and end together leave in as few segments as they fit
            self.transport.write(out + self.h11.send(h11.EndOfMessage()))  # type: ignore[operator]
        except h11.LocalProtocolError:
            self.drop()
            return
        # what is written must be read within the read timeout, or the connection goes
        self.write_deadline = time.monotonic() + self.srv.limits.read_timeout
        self._next_cycle()

    def _error(self, status: int, text: str) -> None:
        """A request we will not serve: answer if the protocol still allows it, then close."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE) and self.transport is not None:
            try:
                body = text.encode()
                headers = [
                    (b"content-type", TEXT),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]
                out = self.h11.send(
                    h11.Response(
                        status_code=status, headers=headers, reason=REASONS.get(status, b"")
                    )
                )
                self.transport.write(out + self.h11.send(h11.Data(data=body)))  # type: ignore[operator]
            except h11.LocalProtocolError:
                pass
        self._close()

    def _close(self) -> None:
        self.phase = "closed"
        if self.transport is not None:
            self.transport.close()  # flushes what is written, then closes
        self.srv.forget(self)

    def _next_cycle(self) -> None:
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
            self._close()
            return
        self.h11.start_next_cycle()
        self.request = None
        self.phase = "idle"
        self.deadline = time.monotonic() + self.srv.limits.idle_timeout
        self.srv.evictable[self] = None
        if self.h11.trailing_data[0]:  # a pipelined request is already buffered
            self.phase = "reading"
            self.deadline = time.monotonic() + self.srv.limits.read_timeout

    def _wait(self, future: asyncio.Future, then: Callable[[asyncio.Future], None]) -> None:
        """Answer later (render, bcrypt, reload): read nothing more until then."""
        self.transport.pause_reading()  # type: ignore[union-attr]

        def done(f: asyncio.Future) -> None:
            if self.phase == "closed":
                return
            then(f)
            if self.phase not in ("busy", "closed") and not self.write_paused:
                self.transport.resume_reading()  # type: ignore[union-attr]
                self._advance()  # requests pipelined behind this one

        future.add_done_callback(done)


def header(req: h11.Request, name: bytes) -> bytes | None:
    for key, value in req.headers:
        if key == name:
            return value
    return None


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on an accepted TCP connection. asyncio sets it only on sockets whose proto
    is IPPROTO_TCP, and socket.create_server leaves proto 0: without it the tail of a response
    waits for the client's delayed ACK, 40 ms on every keep-alive scrape (bench/compare)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
