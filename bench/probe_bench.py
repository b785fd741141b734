"""Benchmark the HTTP prober: many local endpoints that answer after a fixed delay. Run by hand:

    .venv/bin/python bench/probe_bench.py [--endpoints 1000] [--delay 0.2] [--interval 60]
                                          [--duration 240]

An asyncio HTTP server on 127.0.0.1 in this process answers every /e/<n> after `--delay`
seconds and records when each request arrived. The exporter runs as a subprocess with one
endpoint per path (10 apps), as in production. Reported:

- probes per second sustained (requests the server saw, and the exporter's own counters);
- schedule drift: for each endpoint, arrival k minus (first arrival + k * interval), and the
  first arrival's offset from its intended jitter (relative to the median offset, as the
  scheduler's start time is not observable from outside);
- latency error: runbook_probe_duration_seconds minus the true delay, one sample per probe
  (scraped every --scrape-every seconds, de-duplicated on runbook_probe_requests_total);
- CPU seconds (user + system) and RSS of the exporter process, from /proc (Linux), with the
  CPU of the scrapes (measured around each one) told apart from the probing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from exporter.demo.pgserver import free_port
from exporter.probes.runner import jitter

APPS = 10
TICK = os.sysconf("SC_CLK_TCK")


class DelayServer:
    """Answers GET /e/<n> after `delay` seconds; records wall-clock arrival times per path.

    Runs in its own process, so this script's scraping and parsing cannot hold up answers.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrivals: dict[str, list[float]] = {}
        self.late: list[float] = []  # how much later than `delay` each answer was written
        self.port = 0
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.Process(target=self._run, args=(child,), daemon=True)

    def start(self) -> DelayServer:
        self._proc.start()
        if not self._conn.poll(10):
            raise SystemExit("the delay server did not start")
        self.port = self._conn.recv()
        return self

    def stop(self) -> None:
        self._conn.send("stop")
        if self._conn.poll(30):
            self.arrivals, self.late = self._conn.recv()
        self._proc.join(10)

    def _run(self, conn: Connection) -> None:
        asyncio.run(self._main(conn))

    async def _main(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=2048)
        conn.send(server.sockets[0].getsockname()[1])
        async with server:
            await loop.run_in_executor(None, conn.recv)  # blocks until "stop"
            await asyncio.sleep(self.delay + 0.5)  # let answers in flight finish
        conn.send((self.arrivals, self.late))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            arrived = time.time()
            path = head.split(b" ", 2)[1].decode()
            self.arrivals.setdefault(path, []).append(arrived)
            await asyncio.sleep(self.delay)
            body = b'{"status":"ok"}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            self.late.append(time.time() - arrived - self.delay)
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def proc_rss_mib(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else 0.0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


_SAMPLE = re.compile(
    rb"^(runbook_probe_requests_total|runbook_probe_duration_seconds)"
    rb'\{app="([^"]*)",endpoint="([^"]*)"\} (\S+)$',
    re.M,
)


def scrape(url: str) -> tuple[dict[tuple[str, str], tuple[float, float]], float, int]:
    """(app, endpoint) -> (requests_total, last duration); the scrape's wall time; bytes.

    Only the two series needed are picked out with a regex: the full text parser would cost
    this script more CPU than the exporter spends, on the same machine.
    """
    started = time.monotonic()
    body = httpx.get(url, timeout=30).content
    took = time.monotonic() - started
    reqs: dict[tuple[str, str], float] = {}
    durs: dict[tuple[str, str], float] = {}
    for m in _SAMPLE.finditer(body):
        key = (m.group(2).decode(), m.group(3).decode())
        (reqs if m.group(1).endswith(b"_total") else durs)[key] = float(m.group(4))
    return {k: (reqs[k], durs[k]) for k in reqs if k in durs}, took, len(body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--delay", type=float, default=0.2, help="server answer delay, seconds")
    ap.add_argument("--interval", type=float, default=60.0, help="probe interval, seconds")
    ap.add_argument("--duration", type=float, default=240.0, help="seconds to measure")
    ap.add_argument(
        "--scrape-every",
        type=float,
        default=15.0,
        help="seconds between scrapes (Prometheus' usual 15 s); each probe's duration stays "
        "served for a whole interval, so every probe is still sampled",
    )
    args = ap.parse_args()

    server = DelayServer(args.delay).start()
    per_app = -(-args.endpoints // APPS)
    apps, names = [], {}
    for a in range(APPS):
        eps = []
        for i in range(a * per_app, min(args.endpoints, (a + 1) * per_app)):
            eps.append({"name": f"e{i}", "url": f"http://127.0.0.1:{server.port}/e/{i}"})
            names[f"/e/{i}"] = (f"bench-{a}", f"e{i}")
        if eps:
            apps.append(
                {
                    "name": f"bench-{a}",
                    "defaults": {"interval": f"{args.interval}s", "timeout": "5s"},
                    "endpoints": eps,
                }
            )
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as cfg:
        yaml.safe_dump({"apps": apps}, cfg)
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    t_spawn = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "--config.file",
            cfg.name,
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.level",
            "warn",
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    samples: dict[tuple[str, str], dict[float, float]] = {}
    rss_peak, rss_samples = 0.0, []  # (seconds since up, MiB)
    scrape_cpu: list[float] = []
    scrape_wall: list[float] = []
    size = 0
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded: 30 s for the exporter to come up
            try:
                httpx.get(f"http://127.0.0.1:{port}/-/healthy", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("exporter did not start") from None
                time.sleep(0.1)
        t_up = time.time()
        cpu_start = proc_cpu_seconds(proc.pid)
        print(
            f"exporter up in {t_up - t_spawn:.2f}s (cpu {cpu_start:.2f}s, "
            f"rss {proc_rss_mib(proc.pid):.0f} MiB); measuring for {args.duration:g}s ...",
            flush=True,
        )
        end = time.monotonic() + args.duration
        while time.monotonic() < end:  # bounded by --duration
            before = proc_cpu_seconds(proc.pid)
            got, took, size = scrape(metrics_url)
            scrape_cpu.append(proc_cpu_seconds(proc.pid) - before)
            scrape_wall.append(took)
            for key, (n, d) in got.items():
                samples.setdefault(key, {})[n] = d
            rss = proc_rss_mib(proc.pid)
            rss_peak = max(rss_peak, rss)
            rss_samples.append((time.time() - t_up, rss))
            time.sleep(max(0.0, min(args.scrape_every, end - time.monotonic())))
        t_end = time.time()
        cpu_end = proc_cpu_seconds(proc.pid)
        rss_end = proc_rss_mib(proc.pid)
        for key, (n, d) in scrape(metrics_url)[0].items():
            samples.setdefault(key, {})[n] = d
        exporter_probes = sum(max(v) for v in samples.values() if v)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.stop()
        os.unlink(cfg.name)

    arrivals = server.arrivals
    window = t_end - t_up
    seen = sum(1 for ts in arrivals.values() for t in ts if t_up <= t <= t_end)
    drift, first_offsets = [], []
    for path, ts in arrivals.items():
        ts = sorted(ts)
        app, ep = names[path]
        first_offsets.append(ts[0] - t_spawn - jitter(app, ep, args.interval))
        drift += [abs(t - (ts[0] + k * args.interval)) for k, t in enumerate(ts) if k]
    med = statistics.median(first_offsets)
    first_err = [abs(o - med) for o in first_offsets]
    lat_err = [d - args.delay for per in samples.values() for d in per.values()]
    late = server.late
    cpu = cpu_end - cpu_start
    intended = args.endpoints / args.interval
    print()
    print(
        f"endpoints {args.endpoints}, delay {args.delay * 1000:g} ms, interval {args.interval:g}s,"
    )
    print(f"measured {window:.0f}s, endpoints probed {len(arrivals)}/{args.endpoints}")
    print(f"probes/s sustained: {seen / window:.2f} (intended {intended:.2f}); ", end="")
    print(f"server saw {seen} requests, exporter counted {exporter_probes:.0f} probes in total")
    print(
        f"schedule drift vs first probe + k*interval ({len(drift)} repeat probes): "
        f"p50 {pct(drift, 50) * 1000:.1f} ms, p99 {pct(drift, 99) * 1000:.1f} ms, "
        f"max {max(drift, default=float('nan')) * 1000:.1f} ms"
    )
    print(
        f"first probe vs its jitter offset (relative to the median start {med:.2f}s): "
        f"p50 {pct(first_err, 50) * 1000:.1f} ms, p99 {pct(first_err, 99) * 1000:.1f} ms, "
        f"max {max(first_err) * 1000:.1f} ms"
    )
    print(
        f"latency error vs the true {args.delay * 1000:g} ms ({len(lat_err)} probes): "
        f"p50 {pct(lat_err, 50) * 1000:+.2f} ms, p99 {pct(lat_err, 99) * 1000:+.2f} ms, "
        f"min {min(lat_err) * 1000:+.2f} ms, max {max(lat_err) * 1000:+.2f} ms"
    )
    print(
        f"server-side: answers written p50 {pct(late, 50) * 1000:.2f} ms, "
        f"p99 {pct(late, 99) * 1000:.2f} ms after the delay (the bench's own error)"
    )
    probing = cpu - sum(scrape_cpu)
    print(
        f"exporter CPU: {cpu:.2f}s over {window:.0f}s ({cpu / window * 100:.2f} % of one core); "
        f"startup CPU {cpu_start:.2f}s"
    )
    print(
        f"  scrapes: {len(scrape_cpu)} of {size / 1e6:.1f} MB, "
        f"{statistics.mean(scrape_cpu):.2f}s CPU and {statistics.mean(scrape_wall):.2f}s wall "
        f"each; probing: {probing:.2f}s = {probing / max(seen, 1) * 1000:.2f} ms per probe"
    )
    # every endpoint has been probed (and holds its state) after the first interval
    warm = next((r for t, r in rss_samples if t >= args.interval), rss_end)
    print(
        f"exporter RSS: {rss_samples[0][1]:.0f} MiB after start, {warm:.0f} MiB after the first "
        f"interval, {rss_end:.0f} MiB at the end, peak {rss_peak:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
