"""Probe accuracy side by side: runbook-exporter (the issue's footprint setup: 3 targets, 5
queues, 50 endpoints) and blackbox_exporter probe the same local endpoints, which answer after
a fixed 200 ms, at the same rate and in the same window, plus a port that refuses connections.
Reported - true is each probe's reported duration minus the server's fixed delay."""

from __future__ import annotations

import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.compare.procs import Proc

DURATION = re.compile(
    r'^runbook_probe_duration_seconds\{[^}]*endpoint="([^"]+)"[^}]*\} (\S+)$', re.M
)
REQUESTS = re.compile(r'^runbook_probe_requests_total\{[^}]*endpoint="([^"]+)"[^}]*\} (\S+)$', re.M)
REFUSED_REASON = re.compile(
    r'^runbook_probe_failure_reason\{[^}]*endpoint="refused"[^}]*reason="(\w+)"[^}]*\} 1\.0$', re.M
)
BB_VALUE = re.compile(r"^(probe_duration_seconds|probe_success) (\S+)$", re.M)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(errors_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(errors_ms),
        "median_ms": round(statistics.median(errors_ms), 3) if errors_ms else float("nan"),
        "p99_ms": round(quantile(errors_ms, 0.99), 3),
    }


class RunbookSampler:
    """Reads the exporter's /metrics every `every` s and keeps one duration per probe run
    (a run is new when its endpoint's requests counter moved)."""

    def __init__(self, proc: Proc, every: float = 0.5) -> None:
        self.proc, self.every = proc, every
        self.durations: dict[str, list[float]] = {}
        self.requests: dict[str, float] = {}
        self.last_body = ""
        self.recording = False
        self.scrape_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RunbookSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.wait(self.every):
                cpu = self.proc.cpu()
                try:
                    body = c.get(self.proc.metrics_url).text
                except httpx.HTTPError:
                    continue
                if self.recording:  # the exporter's CPU while serving this scrape
                    self.scrape_cpu += self.proc.cpu() - cpu
                self.last_body = body
                durations = {k: float(v) for k, v in DURATION.findall(body)}
                for endpoint, n in REQUESTS.findall(body):
                    seen = self.requests.get(endpoint)
                    if seen != float(n) and endpoint in durations:
                        if seen is not None and self.recording:
                            self.durations.setdefault(endpoint, []).append(durations[endpoint])
                        self.requests[endpoint] = float(n)


def blackbox_probe(client: httpx.Client, proc: Proc, url: str) -> tuple[float, float]:
    body = client.get(
        f"{proc.base}/probe", params={"target": url, "module": "http_2xx"}, timeout=15
    ).text
    values = dict(BB_VALUE.findall(body))
    return float(values["probe_duration_seconds"]), float(values["probe_success"])


def measure(
    ours: Proc,
    blackbox: Proc,
    delayed: list[str],
    refused: str,
    delay: float,
    every: float,
    window: float,
) -> dict:
    """Both exporters probe every endpoint once per `every` s for `window` s."""
    sampler = RunbookSampler(ours).start()
    bb_delayed: list[float] = []
    bb_refused: list[tuple[float, float]] = []
    try:
        time.sleep(every + 0.5)  # every endpoint has been probed once before recording
        sampler.recording = True
        cpu = {"ours": ours.cpu(), "blackbox": blackbox.cpu()}
        before = dict(sampler.requests)
        started = time.monotonic()
        ticks = 0
        with httpx.Client() as client, ThreadPoolExecutor(len(delayed) + 1) as pool:
            while time.monotonic() - started < window:
                futures = [pool.submit(blackbox_probe, client, blackbox, u) for u in delayed]
                refused_f = pool.submit(blackbox_probe, client, blackbox, refused)
                for f in futures:
                    duration, success = f.result()
                    if success == 1:
                        bb_delayed.append(duration)
                bb_refused.append(refused_f.result())
                ticks += 1
                time.sleep(max(0.0, started + ticks * every - time.monotonic()))
        elapsed = time.monotonic() - started
        cpu = {"ours": ours.cpu() - cpu["ours"], "blackbox": blackbox.cpu() - cpu["blackbox"]}
        sampler.recording = False
        ours_probes = sum(n - before.get(e, n) for e, n in sampler.requests.items())
    finally:
        sampler.stop()
    ours_delayed = [d for e, ds in sampler.durations.items() if e != "refused" for d in ds]
    reasons = REFUSED_REASON.findall(sampler.last_body)
    bb_probes = ticks * (len(delayed) + 1)
    return {
        "delay_ms": delay * 1000,
        "endpoints": len(delayed) + 1,
        "every_s": every,
        "window_s": round(elapsed, 1),
        "runbook-exporter": {
            "error": summary([(d - delay) * 1000 for d in ours_delayed]),
            "refused": {
                "n": len(sampler.durations.get("refused", [])),
                "median_ms": round(
                    statistics.median(sampler.durations.get("refused", [float("nan")])) * 1000, 3
                ),
                "reported_reason": reasons[0] if reasons else None,
            },
            "probes": ours_probes,
            # less the CPU while it served the sampler's scrapes (measured around each one;
            # it also counts probe work that ran meanwhile, so this leans low by a little)
            "cpu_ms_per_probe": round(
                (cpu["ours"] - sampler.scrape_cpu) * 1000 / max(ours_probes, 1), 3
            ),
            "cpu_ms_per_probe_with_scrapes": round(cpu["ours"] * 1000 / max(ours_probes, 1), 3),
            "cpu_s_per_min": round(cpu["ours"] * 60 / elapsed, 3),
            "rss_mib": round(ours.rss(), 1),
        },
        "blackbox_exporter": {
            "error": summary([(d - delay) * 1000 for d in bb_delayed]),
            "refused": {
                "n": len(bb_refused),
                "median_ms": round(statistics.median(d for d, _ in bb_refused) * 1000, 3),
                "reported_success": max(s for _, s in bb_refused),
            },
            "probes": bb_probes,
            "cpu_ms_per_probe": round(cpu["blackbox"] * 1000 / max(bb_probes, 1), 3),
            "cpu_s_per_min": round(cpu["blackbox"] * 60 / elapsed, 3),
            "rss_mib": round(blackbox.rss(), 1),
        },
    }
