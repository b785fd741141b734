"""A bounded soak of the exporter's HTTP server: steady scrapes plus idle and slow connections,
sampling the exporter's RSS and open descriptors over time. Run by hand:

    .venv/bin/python bench/soak.py [--minutes 10] [--idle 600] [--slow 20] [--sample-every 10]

All on 127.0.0.1: a target server (bench/probe_bench.py's DelayServer, no delay) and the
exporter (`python -m exporter`, default limits: 512 connections, 10 s read, 60 s idle)
probing `--endpoints` of its paths every second. Meanwhile this script
- scrapes /metrics 10 times a second on one keep-alive connection, and once a second on a
  new connection (gzip, as Prometheus);
- keeps `--idle` connections open that never send a byte (more than the cap: the server
  evicts the oldest, this script reconnects them, so the cap is hit all the time);
- keeps `--slow` connections that send one header byte every 0.5 s (cut off by the read
  timeout, then reconnected).
Every `--sample-every` s: RSS (VmRSS) and descriptors (/proc/<pid>/fd) of the exporter, and the
scrapes that failed. Prints the series and least-squares slopes over the second half (after
the warm-up), per hour.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from probe_bench import DelayServer  # noqa: E402

from exporter.demo.pgserver import free_port  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return statistics.linear_regression(xs, ys).slope * 3600


class Load:
    def __init__(self, port: int, idle: int, slow: int) -> None:
        self.port, self.idle_n, self.slow_n = port, idle, slow
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stop = threading.Event()
        self.scrapes = self.failures = 0
        self.reconnects = 0
        self.threads = [
            threading.Thread(target=f, daemon=True)
            for f in (self._steady, self._fresh, self._idle, self._slow)
        ]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def _scrape(self, client: httpx.Client) -> None:
        try:
            r = client.get(self.url, headers={"Accept-Encoding": "gzip"})
            ok = r.status_code == 200 and b"runbook_probe_success" in r.content
        except httpx.HTTPError:
            ok = False
        self.scrapes += 1
        self.failures += not ok

    def _steady(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self.stop.wait(0.1):
                self._scrape(c)

    def _fresh(self) -> None:
        while not self.stop.wait(1):
            with httpx.Client(timeout=10) as c:
                self._scrape(c)

    def _connect(self) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            return None
        s.setblocking(False)
        self.reconnects += 1
        return s

    @staticmethod
    def _closed(s: socket.socket) -> bool:
        try:
            return s.recv(65536) == b""  # data (a 408/431) then EOF also ends here later
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _idle(self) -> None:
        socks: list[socket.socket] = []
        while not self.stop.wait(1):
            alive = []
            for s in socks:
                if self._closed(s):
                    s.close()
                else:
                    alive.append(s)
            while len(alive) < self.idle_n and not self.stop.is_set():
                s = self._connect()
                if s is None:
                    break
                alive.append(s)
            socks = alive
        for s in socks:
            s.close()

    def _slow(self) -> None:
        line = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        socks: dict[socket.socket, int] = {}
        while not self.stop.wait(0.5):
            for s, i in list(socks.items()):
                try:
                    s.send(line[i : i + 1])
                    socks[s] = i + 1
                except OSError:
                    s.close()
                    del socks[s]
            while len(socks) < self.slow_n and not self.stop.is_set():
                s = self._connect()
                if s is None:
                    break
                socks[s] = 0
        for s in socks:
            s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--idle", type=int, default=600)
    ap.add_argument("--slow", type=int, default=20)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--sample-every", type=float, default=10)
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # our side holds --idle sockets

    target = DelayServer(0.0).start()
    cfg = {
        "apps": [
            {
                "name": "soak",
                "defaults": {"interval": "1s", "timeout": "0.8s"},
                "endpoints": [
                    {"name": f"e{i}", "url": f"http://127.0.0.1:{target.port}/e/{i}"}
                    for i in range(args.endpoints)
                ],
            }
        ]
    }
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    (tmp / "config.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file", str(tmp / "config.yml"),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error"],
        cwd=ROOT,
    )  # fmt: skip
    series: list[tuple[float, float, int, int, int]] = []  # t, rss, fds, scrapes, failures
    load = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/healthy", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the exporter did not come up")
            time.sleep(0.2)
        load = Load(port, args.idle, args.slow).start()
        started = time.monotonic()
        end = started + args.minutes * 60
        print(f"{'t (s)':>7} {'RSS MiB':>8} {'fds':>5} {'scrapes':>8} {'failed':>7}", flush=True)
        while time.monotonic() < end:
            time.sleep(min(args.sample_every, max(0.0, end - time.monotonic())))
            t = time.monotonic() - started
            row = (t, rss_mib(proc.pid), fds(proc.pid), load.scrapes, load.failures)
            series.append(row)
            print(f"{row[0]:7.0f} {row[1]:8.1f} {row[2]:5d} {row[3]:8d} {row[4]:7d}", flush=True)
    finally:
        if load:
            load.join()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        target.stop()

    half = [r for r in series if r[0] >= args.minutes * 30]
    print(
        f"soak {args.minutes:g} min, {args.idle} idle + {args.slow} slow connections, "
        f"{series[-1][3]} scrapes ({series[-1][4]} failed), "
        f"{load.reconnects if load else 0} connections opened by this script"
    )
    print(
        f"RSS {min(r[1] for r in series):.1f}..{max(r[1] for r in series):.1f} MiB, "
        f"slope over the second half {slope_per_hour([(r[0], r[1]) for r in half]):+.2f} MiB/h"
    )
    print(
        f"descriptors {min(r[2] for r in series)}..{max(r[2] for r in series)}, "
        f"slope over the second half {slope_per_hour([(r[0], r[2]) for r in half]):+.1f} /h"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
