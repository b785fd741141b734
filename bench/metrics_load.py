"""Load /metrics with 200 concurrent clients, against Debian's blackbox_exporter in the same run,
and check that the exporter's probes keep their timing meanwhile. Run by hand:

    apt-get install -y wrk prometheus-blackbox-exporter
    .venv/bin/python bench/metrics_load.py [--connections 200] [--seconds 30] [--endpoints 10]

What runs, all on 127.0.0.1:
- a target server (its own process, bench/probe_bench.py's DelayServer with no delay) that
  answers /e/<n> at once;
- the exporter (`python -m exporter`), probing `--endpoints` of those every `--interval` s;
- prometheus-blackbox-exporter with the Debian package's /etc/prometheus/blackbox.yml.

Phases: (1) `--seconds` unloaded, sampling the probes' runbook_probe_duration_seconds;
(2) `--seconds` of wrk (one thread, `--connections` keep-alive connections, gzip accepted as
Prometheus does) on the exporter's /metrics, sampling probe durations all the while;
(3) the same wrk run on blackbox_exporter's /metrics. Reported: requests/s, p50/p99 latency,
errors for both, and the probe durations unloaded vs under load (each probe counted once:
samples are de-duplicated on runbook_probe_requests_total).
"""

from __future__ import annotations

import argparse
import re
import shutil
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

BLACKBOX = "prometheus-blackbox-exporter"
SAMPLE = re.compile(
    r"^(runbook_probe_requests_total|runbook_probe_duration_seconds)\{([^}]*)\} (\S+)$", re.M
)
BLACKBOX_CONFIG = "/etc/prometheus/blackbox.yml"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise SystemExit(f"{tool} not found: apt-get install -y wrk prometheus-blackbox-exporter")
    return path


def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


class ProbeSampler:
    """Scrapes the exporter every `every` s; keeps one duration per probe run, by phase."""

    def __init__(self, url: str, every: float = 0.5) -> None:
        self.url, self.every = url, every
        self.phase = "warmup"
        self.samples: dict[str, list[float]] = {}
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ProbeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def probed(self) -> int:
        return len(self._seen)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.wait(self.every):
                try:
                    text = c.get(self.url).text
                except httpx.HTTPError:
                    continue
                self._take(text)

    def _take(self, text: str) -> None:
        # a regex over the two families, not the full parser: parsing a large exposition
        # four times a second would itself load the machine the probes run on
        runs, durations = {}, {}
        for name, labels, value in SAMPLE.findall(text):
            (runs if name == "runbook_probe_requests_total" else durations)[labels] = float(value)
        for key, n in runs.items():
            if self._seen.get(key) != n and key in durations:
                if key in self._seen:  # the first sighting may predate this phase
                    self.samples.setdefault(self.phase, []).append(durations[key] * 1000)
                self._seen[key] = n


def wrk(url: str, connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [
            need("wrk"),
            "-t1",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--timeout",
            "10s",
            "--latency",
            "-H",
            "Accept-Encoding: gzip",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "p50": ms("50%"),
        "p99": ms("99%"),
        "requests": float(total[1]) if total else 0,
        "errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "timeouts": int(errors[4]) if errors else 0,
        "non2xx": int(non2xx[1]) if non2xx else 0,
    }


def describe(name: str, r: dict[str, float]) -> str:
    return (
        f"{name:<18} {r['rps']:>9.0f} req/s  p50 {r['p50']:>7.2f} ms  p99 {r['p99']:>7.2f} ms  "
        f"socket errors {r['errors']:.0f} (timeouts {r['timeouts']:.0f}), non-2xx {r['non2xx']:.0f}"
    )


def stats(ms: list[float]) -> str:
    if not ms:
        return "no samples"
    qs = statistics.quantiles(ms, n=20) if len(ms) > 1 else [ms[0]] * 19
    return (
        f"n={len(ms):<4} median {statistics.median(ms):6.2f} ms  mean {statistics.fmean(ms):6.2f}"
        f" ms  p95 {qs[18]:6.2f} ms  max {max(ms):6.2f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--interval", type=float, default=1.0, help="probe interval, seconds")
    ap.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="directory holding the exporter package to run, e.g. an older release unpacked "
        "with `git archive <rev> exporter | tar -x -C DIR` for a before/after comparison",
    )
    args = ap.parse_args()
    need("wrk")
    need(BLACKBOX)

    target = DelayServer(0.0).start()
    cfg = {
        "apps": [
            {
                "name": "bench",
                "defaults": {"interval": f"{args.interval}s", "timeout": f"{args.interval * 0.8}s"},
                "endpoints": [
                    {"name": f"e{i}", "url": f"http://127.0.0.1:{target.port}/e/{i}"}
                    for i in range(args.endpoints)
                ],
            }
        ]
    }
    tmp = Path(tempfile.mkdtemp(prefix="metrics-load-"))
    (tmp / "config.yml").write_text(yaml.safe_dump(cfg))
    port, bb_port = free_port(), free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file", str(tmp / "config.yml"),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn"],
        cwd=args.source,
    )  # fmt: skip
    blackbox = subprocess.Popen(
        [need(BLACKBOX), f"--config.file={BLACKBOX_CONFIG}",
         f"--web.listen-address=127.0.0.1:{bb_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    bb_url = f"http://127.0.0.1:{bb_port}/metrics"
    sampler = None
    try:
        wait_up(url)
        wait_up(bb_url)
        sampler = ProbeSampler(url).start()
        deadline = time.monotonic() + 30
        while sampler.probed() < args.endpoints and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2 * args.interval)
        sampler.phase = "unloaded"
        time.sleep(args.seconds)
        sampler.phase = "loaded"
        ours = wrk(url, args.connections, args.seconds)
        sampler.phase = "after"
        time.sleep(2 * args.interval)
        sampler.stop()
        theirs = wrk(bb_url, args.connections, args.seconds)
        size = len(httpx.get(url, headers={"Accept-Encoding": "identity"}).content)
        bb_size = len(httpx.get(bb_url, headers={"Accept-Encoding": "identity"}).content)
    finally:
        if sampler:
            sampler.stop()
        for p in (exporter, blackbox):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        target.stop()

    print(f"/metrics, {args.connections} concurrent keep-alive clients, {args.seconds:g} s each")
    print(describe(f"runbook-exporter ({size} B)", ours))
    print(describe(f"blackbox_exporter ({bb_size} B)", theirs))
    print(f"probe durations, {args.endpoints} endpoints every {args.interval:g} s:")
    for phase in ("unloaded", "loaded"):
        print(f"  {phase:<9} {stats(sampler.samples.get(phase, []))}")
    unloaded, loaded = sampler.samples.get("unloaded"), sampler.samples.get("loaded")
    if unloaded and loaded:
        shift = statistics.median(loaded) - statistics.median(unloaded)
        print(f"  median shift under load: {shift:+.2f} ms (goal: within 5 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
