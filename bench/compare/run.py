"""bench/compare: runbook-exporter side by side with Debian's postgres_exporter and
blackbox_exporter, measured in one run on one machine (docs/benchmarks.md, "Side by side").

    .venv/bin/python -m bench.compare            # full: 100k and 5M rows, ~15-25 minutes
    .venv/bin/python -m bench.compare --smoke    # tiny sizes and windows, ~1 minute (CI)

What runs, all on 127.0.0.1: Debian's PostgreSQL 15 with a jobs table (mostly completed, 300
pending, 60 processing, 1 % failed, 0.1 % dead) at each size; runbook-exporter (one target,
the jobs queue, the default collectors), postgres_exporter with its default metrics and again
with a user's queue SQL (--extend.query-path), each connecting as its own role. Per size:
each collector's run time before and after the indexes `runbook-exporter doctor` prints, and
against the raw SQL it sends; start to the first complete /metrics; one load window scraped
every --scrape-interval (pg_stat_statements calls and time per role, CPU and RSS per process);
/metrics under wrk at 1 and 200 clients. Then once: runbook-exporter with 3 targets, 5 queues
and 50 endpoints and blackbox_exporter probing the same endpoints (200 ms delay, one refused
port) at the same rate, and both /metrics under wrk. Results: bench/results.json (or
--output) and, for a full run, the measured block of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

from bench.compare import collectors, configs, dataset, probes, procs, report
from bench.probe_bench import DelayServer
from exporter import __version__
from exporter.config import parse_config
from exporter.demo.pgserver import free_port

ROOT = Path(__file__).resolve().parents[2]
RUNS_TOTAL = re.compile(
    r'^runbook_collector_runs_total\{[^}]*collector="(\w+)"[^}]*\} (\S+)$', re.M
)
DURATION = re.compile(
    r'^runbook_collector_duration_seconds\{[^}]*collector="(\w+)"[^}]*\} (\S+)$', re.M
)
FAILING = re.compile(r'^runbook_collector_success\{[^}]*collector="(\w+)"[^}]*\} 0\.0$', re.M)
PROBED = re.compile(r'^runbook_probe_requests_total\{[^}]*endpoint="([^"]+)"[^}]*\} ', re.M)
MODES = {
    # sizes, collector runs, wrk seconds, scrape interval, load window, probe interval/window
    "full": dict(sizes="100000,5000000", runs=15, wrk_seconds=10, scrape_interval=15.0,
                 window=60.0, probe_every=5.0, probe_window=60.0),
    "smoke": dict(sizes="2000,20000", runs=3, wrk_seconds=2, scrape_interval=1.0,
                  window=4.0, probe_every=1.0, probe_window=4.0),
}  # fmt: skip
CLIENTS = (1, 200)
DELAY = 0.2
ENDPOINTS = 50  # 49 answering after DELAY, 1 refused
SMALL_QUEUES = ["q1", "q2", "q3", "q4", "q5"]


def complete_runbook(expected: set[str], endpoints: set[str]):
    def check(body: str) -> bool:
        ran = {c for c, n in RUNS_TOTAL.findall(body) if float(n) >= 1}
        return expected <= ran and endpoints <= set(PROBED.findall(body))

    return check


def machine() -> dict:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return {
        "cpu": cpu[1] if cpu else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem[1]) / 1024**2, 1) if mem else None,
        "os": Path("/etc/debian_version").read_text().strip()
        if Path("/etc/debian_version").exists()
        else platform.platform(),
        "kernel": platform.release(),
    }


def scrape_all(ps: list[procs.Proc]) -> dict[str, tuple[float, int]]:
    """One scrape of each exporter at once, as Prometheus would at a tick: ms and series."""

    def one(p: procs.Proc) -> tuple[float, int]:
        started = time.perf_counter()
        r = httpx.get(p.metrics_url, timeout=60)
        r.raise_for_status()
        p.extra["last_body"] = r.text
        return (time.perf_counter() - started) * 1000, procs.samples(r.text)

    with ThreadPoolExecutor(len(ps)) as pool:
        return dict(zip([p.name for p in ps], pool.map(one, ps), strict=True))


def load_window(server: dataset.Server, ps: list[procs.Proc], interval: float, window: float):
    """Scrape every exporter each `interval` s for `window` s: the database time each costs
    per minute (pg_stat_statements by role), and each process's CPU per minute and RSS."""
    dataset.reset_statements(server)
    cpu = {p.name: p.cpu() for p in ps}
    scrapes: dict[str, list[tuple[float, int]]] = {p.name: [] for p in ps}
    started = time.monotonic()
    ticks = 0
    while time.monotonic() - started < window:
        for name, got in scrape_all(ps).items():
            scrapes[name].append(got)
        ticks += 1
        time.sleep(max(0.0, started + ticks * interval - time.monotonic()))
    elapsed = time.monotonic() - started
    db = dataset.statement_load(server)
    per_min = 60 / elapsed
    out = {}
    for p in ps:
        ms = [m for m, _ in scrapes[p.name]]
        out[p.name] = {
            "scrapes": len(ms),
            "scrape_ms_median": round(statistics.median(ms), 2),
            "series": scrapes[p.name][-1][1],
            "pg_calls_per_min": round(db[p.name]["calls"] * per_min, 1),
            "pg_ms_per_min": round(db[p.name]["ms"] * per_min, 2),
            "cpu_s_per_min": round((p.cpu() - cpu[p.name]) * per_min, 3),
            "rss_mib": round(p.rss(), 1),
        }
    return out, round(elapsed, 1)


def measure_exporters(server, main_cfg, target, queries, workdir, opts) -> dict:
    expected = {name for name, _ in target.enabled_collectors()}
    ps = [
        procs.runbook("runbook-exporter", main_cfg, workdir),
        procs.postgres_exporter(
            "postgres_exporter", server.dsn(dataset.ROLES["postgres_exporter"]), workdir, None
        ),
        procs.postgres_exporter(
            "postgres_exporter + queue SQL",
            server.dsn(dataset.ROLES["postgres_exporter + queue SQL"]),
            workdir,
            queries,
        ),
    ]
    complete = [
        complete_runbook(expected, set()),
        lambda body: "\npg_up 1" in body,
        lambda body: "\njobs_count{" in body and "\njobs_oldest_pending_age_seconds" in body,
    ]
    try:
        # polled side by side: each one's time runs from its own spawn
        with ThreadPoolExecutor(len(ps)) as pool:
            list(pool.map(lambda pc: pc[0].wait_complete(pc[1]), zip(ps, complete, strict=True)))
        body = httpx.get(ps[0].metrics_url).text
        failing = sorted(set(FAILING.findall(body)))
        load, elapsed = load_window(server, ps, opts.scrape_interval, opts.window)
        load["last_body"] = ps[0].extra["last_body"]
        out = {"window_s": elapsed, "scrape_interval_s": opts.scrape_interval, "by": {}}
        for p in ps:
            p.alive()
            out["by"][p.name] = {
                "start_to_complete_s": round(p.first_complete or float("nan"), 2),
                **load[p.name],
                **{f"wrk_c{c}": procs.wrk(p.metrics_url, c, opts.wrk_seconds) for c in CLIENTS},
            }
        ours = out["by"]["runbook-exporter"]
        ours["failing_collectors"] = failing
        # each scrape on a new connection: the first request of a connection is not held by
        # the delayed-ACK stall that keep-alive requests hit (docs/benchmarks.md)
        ours["wrk_c1_new_connections"] = procs.wrk(
            ps[0].metrics_url, 1, opts.wrk_seconds, keep_alive=False
        )
        # what the running exporter reports for its own last runs (includes any wait for the
        # target's connection: issue 18 part 2)
        ours["self_reported_ms"] = {
            c: round(float(v) * 1000, 2) for c, v in DURATION.findall(load["last_body"])
        }
        return out
    finally:
        for p in ps:
            p.stop()


def measure_probes(server, workdir, opts) -> dict:
    delay_server = DelayServer(DELAY).start()
    refused_port = free_port()  # bound once and closed: nothing listens there
    delayed = [f"http://127.0.0.1:{delay_server.port}/e/{i}" for i in range(ENDPOINTS - 1)]
    refused = f"http://127.0.0.1:{refused_port}/"
    endpoints = [(f"e{i}", u) for i, u in enumerate(delayed)] + [("refused", refused)]
    cfg = configs.write(
        workdir / "footprint.yml",
        configs.runbook_footprint(
            server.dsn(dataset.ROLES["runbook-exporter"]),
            opts.scrape_interval,
            SMALL_QUEUES,
            endpoints,
            opts.probe_every,
        ),
    )
    config = parse_config(cfg.read_text(), str(cfg))
    expected = {name for name, _ in config.targets[0].enabled_collectors()}
    bb_cfg = configs.write(workdir / "blackbox.yml", configs.BLACKBOX)
    ours = procs.runbook("runbook-exporter (3 targets, 5 queues, 50 endpoints)", cfg, workdir)
    bb = procs.blackbox_exporter(bb_cfg, workdir)
    out: dict = {}
    try:
        ours_complete = complete_runbook(expected, {name for name, _ in endpoints})
        with ThreadPoolExecutor(2) as pool:
            waits = [
                pool.submit(ours.wait_complete, ours_complete),
                pool.submit(bb.wait_complete, lambda body: "blackbox_exporter_build_info" in body),
            ]
            for w in waits:
                w.result()
        out = probes.measure(ours, bb, delayed, refused, DELAY, opts.probe_every, opts.probe_window)
        for p, key in ((ours, "runbook-exporter"), (bb, "blackbox_exporter")):
            out[key]["start_to_complete_s"] = round(p.first_complete or float("nan"), 2)
            out[key]["series"] = procs.samples(httpx.get(p.metrics_url).text)
            for c in CLIENTS:
                out[key][f"wrk_c{c}"] = procs.wrk(p.metrics_url, c, opts.wrk_seconds)
    finally:
        ours.stop()
        bb.stop()
        delay_server.stop()
    # how much later than DELAY the server wrote its answers (the "true" duration's own error)
    out["server_late_ms"] = probes.summary([x * 1000 for x in delay_server.late])
    return out


def run(opts: argparse.Namespace) -> dict:
    for tool in procs.TOOLS:
        procs.need(tool)
    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    results: dict = {
        "command": opts.command,
        "mode": opts.mode,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "load_average_start": os.getloadavg(),
        "versions": {
            "runbook-exporter": __version__,
            "python": platform.python_version(),
            "psycopg": psycopg.__version__,
            **{t: procs.version(t) for t in procs.TOOLS},
        },
        "sizes": {},
    }
    server = dataset.start()
    results["versions"]["postgresql"] = server.version
    try:
        queries = configs.write(workdir / "queries.yaml", configs.PGX_QUEUE_QUERIES)
        main_cfg = configs.write(
            workdir / "runbook.yml",
            configs.runbook_main(
                server.dsn(dataset.ROLES["runbook-exporter"]), opts.scrape_interval
            ),
        )
        target = parse_config(main_cfg.read_text(), str(main_cfg)).targets[0]
        raw_dsn = server.dsn(dataset.ROLES["runbook-exporter"])
        for n in [int(s) for s in opts.sizes.split(",")]:
            print(f"[{time.strftime('%H:%M:%S')}] {n:,} rows: building", flush=True)
            size: dict = {"table": dataset.build_jobs(server, n), "collectors": {}}
            print(f"  built: {size['table']}", flush=True)
            size["collectors"]["primary key only"] = collectors.run(target, raw_dsn, opts.runs)
            statements, doctor_out = dataset.doctor_indexes(main_cfg)
            if not statements:
                raise SystemExit(f"the doctor recommended no index:\n{doctor_out}")
            dataset.apply_indexes(server, statements)
            size["doctor_indexes"] = statements
            size["collectors"]["doctor's indexes"] = collectors.run(target, raw_dsn, opts.runs)
            print(f"  collectors timed; exporters ({time.strftime('%H:%M:%S')})", flush=True)
            size["exporters"] = measure_exporters(server, main_cfg, target, queries, workdir, opts)
            results["sizes"][str(n)] = size
        print(f"[{time.strftime('%H:%M:%S')}] probes and footprint", flush=True)
        dataset.build_small_queues(server, SMALL_QUEUES)
        results["probes"] = measure_probes(server, workdir, opts)
    finally:
        server.pg.cleanup()
    results["load_average_end"] = os.getloadavg()
    results["summary"] = report.summarize(results)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and windows (CI)")
    ap.add_argument("--sizes", help="comma-separated row counts of the jobs table")
    ap.add_argument("--runs", type=int, help="timed runs per collector (median)")
    ap.add_argument("--wrk-seconds", type=float, help="seconds of each wrk run")
    ap.add_argument("--scrape-interval", type=float, help="seconds between scrapes")
    ap.add_argument("--window", type=float, help="seconds of the load window")
    ap.add_argument("--probe-every", type=float, help="probe interval of every endpoint")
    ap.add_argument("--probe-window", type=float, help="seconds of the probe window")
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    ap.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md alone")
    ap.add_argument(
        "--render",
        type=Path,
        help="measure nothing: rewrite docs/benchmarks.md's block from this results file",
    )
    opts = ap.parse_args(argv)
    opts.mode = "smoke" if opts.smoke else "full"
    for key, value in MODES[opts.mode].items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    opts.command = "python -m bench.compare " + " ".join(argv if argv is not None else sys.argv[1:])
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.render:
        results = json.loads(opts.render.read_text())
        results["summary"] = report.summarize(results)
        report.write_doc(results)
        print(report.table(results))
        return 0
    results = run(opts)
    kept = json.loads(opts.output.read_text()) if opts.output.exists() else {}
    if "statements_series" in kept:  # bench.compare.statements_series's own run: kept as is
        results["statements_series"] = kept["statements_series"]
    opts.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(report.table(results))
    print(f"results written to {opts.output}")
    if not opts.no_doc and not opts.smoke:
        report.write_doc(results)
        print(f"written to {report.DOC}")
    return 0
