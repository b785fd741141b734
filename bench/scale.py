"""How much one exporter process holds: targets x 10 queues and endpoints, all on 127.0.0.1.

    .venv/bin/python bench/scale.py [--levels 10x200,25x500,50x1000,50x1000/2,100x2000/4]
                                    [--window 60] [--warmup 30] [--write-doc]

One throwaway PostgreSQL with `--databases` databases (default 50), each holding 10 queue tables
of 1,000 jobs (a realistic few dozen active, some failed and dead, the runbook's indexes); a
target beyond the 50th reuses a database under its own name (the exporter's work per target is
the same; PostgreSQL sees two sessions there). One HTTP server process (asyncio, one response
after `--endpoint-delay`) answers every endpoint path. For each level
`<targets>x<endpoints>[/<replicas>][s]` the exporter runs as one child process per replica, each
with `--shard=i/N` of the level's one configuration (Exporter + HTTPServer exactly as
`serve()` builds them, plus a task on the collection loop that measures how late a 100 ms
sleep wakes up), with the default intervals: every collector each 15 s, every endpoint each
15 s (`--probe-interval`). A trailing `s` is an experiment: each target's collectors start at
a stable phase of their interval instead of all targets' at once (see spread_target_phases).

After `--warmup` seconds it measures for `--window` seconds:
- intervals kept: the share of jobs whose runs over the window (runbook_collector_runs_total,
  runbook_probe_requests_total) reach floor(window / interval), as any job on schedule does;
  and at every scrape the stalest job: (now - its last success) / its interval;
- collector run time and probe duration (median, p99): what a saturated loop inflates first;
- /metrics latency (median, p99 of a scrape every `--scrape-every` seconds, 7.5 as an HA pair
  of Prometheus servers at 15 s, plus 20 back to back at the end), body size and series;
- RSS (VmRSS) at the end, CPU seconds per minute of the process over the window;
- event-loop lag (how late the 100 ms sleep woke: median, p99, max).
A level keeps up when >= 97 % of the collector jobs and of the probe jobs kept their interval,
no job went stale by more than 2 intervals, no collector run failed, and the loop's p99 lag is
under 1 s.

Every loop is bounded (levels, scrapes, seconds); all traffic stays on 127.0.0.1.
Results: printed, bench/scale-results.json, and with --write-doc the table in
docs/deployment.md ("Sizing").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.docblock import write_block  # noqa: E402
from exporter.demo.pgserver import LocalPostgres, free_port  # noqa: E402

QUEUES = 10
JOBS = 1000
DOC_START = "<!-- bench/scale.py: start -->"
DOC_END = "<!-- bench/scale.py: end -->"

SCHEMA = """
CREATE TABLE jobs_{q} (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'pending',
    retry_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO jobs_{q} (status, retry_count, created_at, updated_at)
SELECT CASE WHEN g <= 30 THEN 'pending' WHEN g <= 40 THEN 'processing'
            WHEN g <= 50 THEN 'failed' WHEN g <= 52 THEN 'dead' ELSE 'completed' END,
       CASE WHEN g BETWEEN 41 AND 52 THEN 3 ELSE 0 END,
       now() - make_interval(secs => g * 7), now() - make_interval(secs => g * 3)
FROM generate_series(1, {jobs}) g;
CREATE INDEX jobs_{q}_active_idx ON jobs_{q} (status)
    WHERE status IN ('pending', 'processing', 'failed', 'dead');
CREATE INDEX jobs_{q}_finished_idx ON jobs_{q} (updated_at)
    WHERE status IN ('completed', 'failed');
"""


# --- the child processes: the HTTP endpoints and the exporter -----------------------------


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float):
    body = b'{"status":"ok"}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    try:
        for _ in range(100_000):  # bounded: requests per keep-alive connection
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            if not request:
                break
            if delay:
                await asyncio.sleep(delay)
            writer.write(head % len(body) + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
        pass
    finally:
        writer.close()


def serve_http(port: int, delay: float, seconds: float) -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _answer(r, w, delay), "127.0.0.1", port, backlog=2048
        )
        async with server:
            await asyncio.sleep(seconds)  # bounded: the parent stops it sooner

    asyncio.run(main())


async def _loop_lag(path: Path, seconds: float) -> None:
    """How late a 100 ms sleep wakes: the loop's backlog of ready work."""
    with path.open("a") as out:
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # bounded by time
            t = time.perf_counter()
            await asyncio.sleep(0.1)
            out.write(f"{time.time():.3f} {time.perf_counter() - t - 0.1:.6f}\n")
            out.flush()


def spread_target_phases() -> None:
    """The experiment of a level ending in `s`: each target's collectors start at a stable
    phase of their interval (as probes do, probes/runner.jitter) instead of every target's at
    the same moment. Patched into this child only; the exporter itself is unchanged."""
    from exporter import runtime
    from exporter.probes.runner import jitter

    plain = runtime._target_jobs

    def spread(db):
        jobs = plain(db)
        for j in jobs:
            phase = jitter("target", db.target.name, j.interval)
            j.first_delay = (phase + j.first_delay) % j.interval
        return jobs

    runtime._target_jobs = spread


def run_exporter(config: str, port: int, lag_file: str, seconds: float, shard: str) -> None:
    from exporter import logs
    from exporter.config import load_config
    from exporter.runtime import Exporter
    from exporter.server import HTTPServer
    from exporter.shard import parse as parse_shard

    logs.setup("error", "logfmt")
    if os.environ.get("SCALE_SPREAD_TARGETS") == "1":
        spread_target_phases()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    selection = parse_shard(shard)
    exporter = Exporter(selection.select(load_config(config)), config, selection)
    server = HTTPServer(exporter, f"127.0.0.1:{port}")
    exporter.start()
    server.start()
    assert exporter._loop is not None
    asyncio.run_coroutine_threadsafe(_loop_lag(Path(lag_file), seconds), exporter._loop)
    stop.wait(seconds)
    server.stop()
    exporter.stop()


# --- the parent: set up, run each level, measure -----------------------------------------


def prepare_databases(pg: LocalPostgres, count: int) -> list[str]:
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute("CREATE DATABASE scale_template")
    tmpl = pg.dsn.rsplit("/", 1)[0] + "/scale_template"
    with psycopg.connect(tmpl, autocommit=True) as c:
        for q in range(QUEUES):
            c.execute(SCHEMA.format(q=q, jobs=JOBS))
        c.execute("VACUUM ANALYZE")
    names = [f"app_{i:03d}" for i in range(count)]
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        for n in names:
            c.execute(f"CREATE DATABASE {n} TEMPLATE scale_template")
    return [pg.dsn.rsplit("/", 1)[0] + f"/{n}" for n in names]


def level_config(
    dsns: list[str], targets: int, endpoints: int, http_port: int, probe_interval: str
) -> dict:
    apps, per_app = [], 50
    for a in range(0, endpoints, per_app):
        apps.append(
            {
                "name": f"app-{a // per_app:02d}",
                "defaults": {"interval": probe_interval},
                "endpoints": [
                    {"name": f"ep-{i:04d}", "url": f"http://127.0.0.1:{http_port}/health/{i}"}
                    for i in range(a, min(a + per_app, endpoints))
                ],
            }
        )
    return {
        "targets": [
            {
                "name": f"db-{t:03d}",
                "dsn": dsns[t % len(dsns)],
                "queues": [{"name": f"q{q}", "table": f"public.jobs_{q}"} for q in range(QUEUES)],
            }
            for t in range(targets)
        ],
        "apps": apps,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def by_key(m: dict, name: str, keys: tuple[str, ...]) -> dict[tuple, float]:
    return {tuple(lb.get(k, "") for k in keys): v for lb, v in m.get(name, [])}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))]


def kept(m0: dict, m1: dict, runs: str, interval: str, keys: tuple, window: float) -> list[bool]:
    """Per job due in the window: did it keep its interval? A job on schedule runs at least
    floor(window / interval) times in any window, whatever its phase."""
    r0, r1, iv = by_key(m0, runs, keys), by_key(m1, runs, keys), by_key(m1, interval, keys)
    due = {k: int(window // iv[k]) for k in r1 if iv.get(k, 0) > 0 and window >= iv[k]}
    return [r1[k] - r0.get(k, 0) >= n for k, n in due.items()]


def share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 3) if flags else 1.0  # none due: nothing missed


LAST_SUCCESS = re.compile(
    r"^(runbook_collector_last_success_timestamp_seconds|"
    r"runbook_probe_last_success_timestamp_seconds)(\{[^}]*\}) (\S+)$",
    re.M,
)


def staleness(text: str, now: float, intervals: dict[str, float]) -> float:
    """The stalest job in this scrape: (now - its last success) / its interval."""
    worst = 0.0
    for _, labels, value in LAST_SUCCESS.findall(text):
        iv = intervals.get(labels)
        if iv:
            worst = max(worst, (now - float(value)) / iv)
    return worst


def interval_by_labels(text: str) -> dict[str, float]:
    pattern = re.compile(r"^runbook_(?:collector|probe)_interval_seconds(\{[^}]*\}) (\S+)$", re.M)
    return {labels: float(v) for labels, v in pattern.findall(text)}


class Replica:
    """One exporter child process (one shard of the level's configuration) and what the
    parent measured of it."""

    def __init__(
        self, cfg: Path, work: Path, shard: str, seconds: float, spread: bool = False
    ) -> None:
        self.port = free_port()
        self.lag_file = work / f"lag-{cfg.stem}-{shard.replace('/', 'of')}.txt"
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        argv = [str(cfg), str(self.port), str(self.lag_file), str(seconds), shard]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child-exporter", *argv],
            stdout=subprocess.DEVNULL,
            env={**os.environ, "SCALE_SPREAD_TARGETS": "1" if spread else "0"},
        )
        self.lat: list[float] = []
        self.sizes: list[int] = []
        self.stale: list[float] = []

    def wait_listening(self, client: httpx.Client) -> None:
        for _ in range(600):  # bounded: 60 s to listen
            try:
                if client.get(self.url).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)

    def begin(self, client: httpx.Client) -> None:
        self.t0, self.c0 = time.time(), cpu_seconds(self.proc.pid)
        text = client.get(self.url).text
        self.m0, self.intervals = parse(text), interval_by_labels(text)

    def sample(self, client: httpx.Client) -> None:
        t = time.perf_counter()
        r = client.get(self.url)
        self.lat.append(time.perf_counter() - t)
        self.sizes.append(len(r.content))
        self.stale.append(staleness(r.text, time.time(), self.intervals))

    def finish(self, client: httpx.Client) -> None:
        self.t1, self.c1 = time.time(), cpu_seconds(self.proc.pid)
        self.text = client.get(self.url).text
        self.m1 = parse(self.text)
        self.rss = rss_mib(self.proc.pid)
        for _ in range(20):  # back to back, as several Prometheus servers may
            t = time.perf_counter()
            client.get(self.url)
            self.lat.append(time.perf_counter() - t)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def lags(self) -> list[float]:
        out = []
        for line in self.lag_file.read_text().splitlines():
            at, lag = line.split()
            if self.t0 <= float(at) <= self.t1:
                out.append(float(lag))
        return out


def measure_level(
    args, dsns, http_port, targets: int, endpoints: int, shards: int, spread: bool, work: Path
) -> dict:
    cfg = work / f"level-{targets}x{endpoints}.yml"
    cfg.write_text(
        yaml.safe_dump(level_config(dsns, targets, endpoints, http_port, args.probe_interval))
    )
    seconds = args.warmup + args.window + 120
    replicas = [Replica(cfg, work, f"{i}/{shards}", seconds, spread) for i in range(shards)]
    try:
        with httpx.Client(timeout=30) as client:
            for r in replicas:
                r.wait_listening(client)
            time.sleep(args.warmup)
            load_before = round(os.getloadavg()[0], 1)
            for r in replicas:
                r.begin(client)
            end = time.monotonic() + args.window
            while time.monotonic() < end:  # bounded by the window
                for r in replicas:
                    r.sample(client)
                time.sleep(max(0.0, min(args.scrape_every, end - time.monotonic())))
            for r in replicas:
                r.finish(client)
    finally:
        for r in replicas:
            r.stop()
    tc, ae = ("target", "collector"), ("app", "endpoint")
    on_interval_c, on_interval_p, lags, lat, durations, probe_durations = [], [], [], [], [], []
    errors = failures = 0.0
    for r in replicas:
        window = r.t1 - r.t0
        on_interval_c += kept(
            r.m0,
            r.m1,
            "runbook_collector_runs_total",
            "runbook_collector_interval_seconds",
            tc,
            window,
        )
        on_interval_p += kept(
            r.m0,
            r.m1,
            "runbook_probe_requests_total",
            "runbook_probe_interval_seconds",
            ae,
            window,
        )
        lags += r.lags()
        lat += r.lat
        durations += by_key(r.m1, "runbook_collector_duration_seconds", tc).values()
        probe_durations += by_key(r.m1, "runbook_probe_duration_seconds", ae).values()
        for name, keys in (("runbook_collector_errors_total", tc),):
            errors += sum(by_key(r.m1, name, keys).values()) - sum(
                by_key(r.m0, name, keys).values()
            )
        name = "runbook_probe_failures_total"
        failures += sum(by_key(r.m1, name, ae).values()) - sum(by_key(r.m0, name, ae).values())
    res = {
        "targets": targets,
        "queues": targets * QUEUES,
        "endpoints": endpoints,
        "replicas": shards,
        "targets_spread": spread,
        "window_s": round(min(r.t1 - r.t0 for r in replicas), 1),
        "load_average_1m": load_before,
        "collector_jobs_on_interval": share(on_interval_c),
        "probe_jobs_on_interval": share(on_interval_p) if endpoints else None,
        "stalest_job_intervals": round(max(max(r.stale, default=0.0) for r in replicas), 2),
        "collector_errors": errors,
        "probe_failures": failures,
        "collector_run_ms_p50": round(1000 * pct(durations, 0.5), 1),
        "collector_run_ms_p99": round(1000 * pct(durations, 0.99), 1),
        "probe_ms_p50": round(1000 * pct(probe_durations, 0.5), 1),
        "probe_ms_p99": round(1000 * pct(probe_durations, 0.99), 1),
        "metrics_ms_p50": round(1000 * statistics.median(lat), 1),
        "metrics_ms_p99": round(1000 * pct(lat, 0.99), 1),
        # per replica: the largest
        "metrics_kib": round(max(statistics.median(r.sizes) for r in replicas) / 1024),
        "series": max(
            sum(1 for ln in r.text.splitlines() if ln and not ln.startswith("#")) for r in replicas
        ),
        "rss_mib": round(max(r.rss for r in replicas)),
        # all replicas together
        "cpu_s_per_min": round(sum((r.c1 - r.c0) / (r.t1 - r.t0) * 60 for r in replicas), 1),
        "loop_lag_ms_p50": round(1000 * pct(lags, 0.5), 1),
        "loop_lag_ms_p99": round(1000 * pct(lags, 0.99), 1),
        "loop_lag_ms_max": round(1000 * max(lags, default=float("nan")), 1),
    }
    res["keeps_up"] = bool(
        res["collector_jobs_on_interval"] >= 0.97
        and (res["probe_jobs_on_interval"] is None or res["probe_jobs_on_interval"] >= 0.97)
        and res["stalest_job_intervals"] <= 2
        and res["collector_errors"] == 0
        and res["loop_lag_ms_p99"] < 1000
    )
    return res


COLUMNS = [
    ("targets x queues", lambda r: f"{r['targets']} x {QUEUES}"),
    (
        "replicas (--shard)",
        lambda r: str(r["replicas"]) + (" (targets spread)" if r.get("targets_spread") else ""),
    ),
    ("endpoints", lambda r: str(r["endpoints"])),
    (
        "jobs on interval (coll. / probes)",
        lambda r: (
            f"{r['collector_jobs_on_interval']:.0%} / "
            + ("-" if r["probe_jobs_on_interval"] is None else f"{r['probe_jobs_on_interval']:.0%}")
        ),
    ),
    (
        "stalest job (intervals)",
        lambda r: f"{r['stalest_job_intervals']:.1f}",
    ),
    (
        "collector run ms p50 / p99",
        lambda r: f"{r['collector_run_ms_p50']} / {r['collector_run_ms_p99']}",
    ),
    ("probe ms p50 / p99", lambda r: f"{r['probe_ms_p50']} / {r['probe_ms_p99']}"),
    ("loop lag ms p50 / p99", lambda r: f"{r['loop_lag_ms_p50']} / {r['loop_lag_ms_p99']}"),
    ("/metrics ms p50 / p99", lambda r: f"{r['metrics_ms_p50']} / {r['metrics_ms_p99']}"),
    ("/metrics size per replica", lambda r: f"{r['metrics_kib']:.0f} KiB, {r['series']} series"),
    ("RSS MiB per replica", lambda r: f"{r['rss_mib']:.0f}"),
    ("CPU s/min (all replicas)", lambda r: f"{r['cpu_s_per_min']}"),
    ("load avg", lambda r: f"{r['load_average_1m']}"),
    ("keeps up", lambda r: "yes" if r["keeps_up"] else "**no**"),
]


def table(results: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = ["| " + " | ".join(f(r) for _, f in COLUMNS) + " |" for r in results]
    return "\n".join([head, rule, *rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--levels",
        default="10x200,25x500,50x1000,50x1000/2,100x2000/4",
        help="comma-separated <targets>x<endpoints>[/<replicas>][s]: replicas run "
        "--shard=i/N; a trailing s spreads each target's collectors over their interval",
    )
    ap.add_argument("--databases", type=int, default=50)
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--probe-interval", default="15s")
    ap.add_argument(
        "--scrape-every",
        type=float,
        default=7.5,
        help="seconds between scrapes in the window (7.5: an HA pair scraping every 15 s)",
    )
    ap.add_argument("--endpoint-delay", type=float, default=0.02, help="seconds per response")
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    levels = []
    for lv in args.levels.split(","):  # <targets>x<endpoints>[/<replicas>][s]
        spread = lv.endswith("s")
        size, _, replicas = lv.removesuffix("s").partition("/")
        targets, endpoints = (int(x) for x in size.split("x"))
        levels.append((targets, endpoints, int(replicas or 1), spread))
    work = Path(tempfile.mkdtemp(prefix="runbook-scale-"))
    http_port = free_port()
    http = subprocess.Popen(
        [sys.executable, __file__, "--child-http", str(http_port), str(args.endpoint_delay), "3600"]
    )
    results = []
    started = time.time()
    try:
        with LocalPostgres(settings={"max_connections": "400"}) as pg:
            t = time.monotonic()
            dsns = prepare_databases(pg, args.databases)
            print(f"{len(dsns)} databases x {QUEUES} queue tables in {time.monotonic() - t:.0f} s")
            for targets, endpoints, replicas, spread in levels:
                r = measure_level(args, dsns, http_port, targets, endpoints, replicas, spread, work)
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        http.terminate()
        http.wait(10)
    print(table(results))
    cpu = platform.processor() or platform.machine()
    meta = {
        "command": "python bench/scale.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "machine": f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"PostgreSQL {pg_version()}",
        "probe_interval": args.probe_interval,
        "endpoint_delay_s": args.endpoint_delay,
    }
    (ROOT / "bench" / "scale-results.json").write_text(
        json.dumps({"meta": meta, "levels": results}, indent=2) + "\n"
    )
    if args.write_doc:
        block = (
            f"{DOC_START}\nMeasured {meta['started']} on {meta['machine']}; command "
            f"`{meta['command']}`; collectors every 15 s, endpoints every {args.probe_interval} "
            f"(each answering in {args.endpoint_delay * 1000:.0f} ms), {args.window:.0f} s "
            f"measured after {args.warmup:.0f} s warm-up.\n\n{table(results)}\n{DOC_END}"
        )
        write_block(ROOT / "docs" / "deployment.md", DOC_START, DOC_END, block, "## Sizing")
    return 0


def pg_version() -> str:
    from exporter.demo.pgserver import find_bin_dir

    out = subprocess.run(
        [str(find_bin_dir() / "postgres"), "--version"], capture_output=True, text=True
    )
    return out.stdout.split()[-1] if out.returncode == 0 else "?"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if len(sys.argv) > 1 and sys.argv[1] == "--child-http":
        serve_http(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
        raise SystemExit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--child-exporter":
        shard = sys.argv[6] if len(sys.argv) > 6 else "0/1"
        run_exporter(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), shard)
        raise SystemExit(0)
    raise SystemExit(main())
