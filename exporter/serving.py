"""Serving: run the exporter and its HTTP server until stopped, reload on SIGHUP.

What `runbook-exporter` does after parsing its flags (cli.py), and what the demo runs
(exporter/demo/run.py) against its throwaway database; here so that the demo needs nothing
from the command line module and cli.py imports the demo only for `runbook-exporter demo`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from exporter import __version__

if TYPE_CHECKING:
    from exporter.config import Config
    from exporter.shard import Shard

log = logging.getLogger("exporter")


def serve(
    config: Config,
    listen: str | list[str],
    stop: threading.Event | None = None,
    announce: Callable[[int, str], None] | None = None,
    config_file: str | None = None,
    web_config: str | None = None,
    telemetry_path: str = "/metrics",
    shard: Shard | None = None,
) -> int:
    """Run until `stop` is set or SIGINT/SIGTERM arrives; SIGHUP reloads `config_file`
    (`config` is already `shard`'s part; a reload selects it again)."""
    from exporter.config import ConfigError
    from exporter.runtime import Exporter
    from exporter.server import HTTPServer

    exporter = Exporter(config, config_file, shard)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        # before anything starts: SIGHUP's default action would end the process silently
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: _reload_in_background(exporter.reload))
    try:
        server = HTTPServer(
            exporter,
            listen,
            web_config=web_config,
            reload=exporter.reload,
            telemetry_path=telemetry_path,
        )
    except (OSError, ValueError, ConfigError) as e:
        log.error("cannot listen", extra={"address": listen, "error": str(e)})
        return 1
    exporter.start()
    server.start()
    log.info("listening", extra={"address": listen, "port": server.port, "version": __version__})
    if announce:
        announce(server.port, server.address[0])
    stop.wait()
    log.info("shutting down")
    server.stop()
    exporter.stop()
    return 0


def _reload_in_background(reload: Callable[[], tuple[bool, str]]) -> None:
    """Off the signal handler: a reload waits on the collection loop, and a second SIGHUP
    arriving meanwhile must queue behind it (Exporter.reload serialises), not deadlock."""
    threading.Thread(target=reload, name="reload", daemon=True).start()
