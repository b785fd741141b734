"""Where the HTTP server listens: `--web.listen-address` values, their bound sockets, and
the open-file limit the connections draw on."""

from __future__ import annotations

import errno
import logging
import resource
import socket
from collections.abc import Sequence

log = logging.getLogger("exporter.http")

DEFAULT_PORT = 9883  # not taken in the Prometheus default port allocations list
NOFILE_CEILING = 1 << 20  # what to aim for when the hard limit is "unlimited"


def parse_listen_address(addr: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (host "" = every interface)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {addr!r}: use host:port, e.g. :{DEFAULT_PORT}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"invalid listen address {addr!r}: write IPv6 hosts in brackets, [::1]:0")
    return host, int(port)


def listen_sockets(addresses: Sequence[str], backlog: int) -> list[socket.socket]:
    """Bound, listening sockets for every address (a host name may give v4 and v6)."""
    socks: list[socket.socket] = []
    try:
        for addr in addresses:
            host, port = parse_listen_address(addr)
            if not host:  # every interface: one dual-stack socket where IPv6 exists
                socks.append(_all_interfaces(port, backlog))
                continue
            first_port = None
            seen = set()
            for family, _, _, _, sa in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            ):
                if sa[0] in seen:
                    continue
                seen.add(sa[0])
                # port 0 on a name with several addresses: the same port for all of them
                bind_port = first_port if port == 0 and first_port else port
                s = socket.create_server((sa[0], bind_port), family=family, backlog=backlog)
                first_port = s.getsockname()[1]
                socks.append(s)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def _all_interfaces(port: int, backlog: int) -> socket.socket:
    if socket.has_dualstack_ipv6():
        try:
            return socket.create_server(
                ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=backlog
            )
        except OSError as e:  # IPv6 present but disabled (sysctl): IPv4 only, as before
            if e.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                raise
    return socket.create_server(("0.0.0.0", port), backlog=backlog)


def raise_nofile_limit() -> None:
    """Raise the soft open-file limit to the hard one: a scrape flood must not take the
    descriptors the probes and database connections need (the cap bounds our share)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.info("raised the open-file limit", extra={"soft": soft, "to": target})
    except (ValueError, OSError) as e:  # e.g. a seccomp filter: LimitNOFILE= in the unit
        log.warning("cannot raise the open-file limit", extra={"soft": soft, "error": str(e)})
