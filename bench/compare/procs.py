"""The processes bench/compare measures: runbook-exporter and Debian's postgres_exporter and
blackbox_exporter, started on 127.0.0.1, with their CPU and RSS read from /proc, their start
to the first complete /metrics, and wrk runs against their /metrics."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from exporter.demo.pgserver import free_port

ROOT = Path(__file__).resolve().parents[2]
# tool -> the Debian package that has it (scripts/setup.sh installs them)
TOOLS = {
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    "wrk": "wrk",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def need(tool: str) -> str:
    """The tool's path; a missing tool ends the run (it is never skipped)."""
    path = shutil.which(tool)
    if not path:
        raise SystemExit(
            f"{tool} not found: bash scripts/setup.sh installs it (apt package {TOOLS[tool]})"
        )
    return path


def version(tool: str) -> str:
    out = subprocess.run([need(tool), "--version"], capture_output=True, text=True, timeout=10)
    text = out.stdout + out.stderr
    m = re.search(r"version (\S+)|wrk (\S+)", text)
    return (m[1] or m[2]) if m else text.strip().splitlines()[0]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    port: int
    started: float  # time.monotonic() at spawn
    log: Path
    first_complete: float | None = None  # seconds from spawn to the first complete /metrics
    cpu_mark: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return cpu_seconds(self.popen.pid)

    def rss(self) -> float:
        return rss_mib(self.popen.pid)

    def alive(self) -> None:
        if self.popen.poll() is not None:
            raise SystemExit(
                f"{self.name} exited ({self.popen.returncode}): {self.log.read_text()[-2000:]}"
            )

    def wait_complete(self, complete: Callable[[str], bool], timeout: float = 120) -> float:
        """Poll /metrics until `complete(body)`; the seconds from spawn to that body."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=10) as c:
            while time.monotonic() < deadline:
                self.alive()
                try:
                    r = c.get(self.metrics_url)
                    if r.status_code == 200 and complete(r.text):
                        self.first_complete = time.monotonic() - self.started
                        return self.first_complete
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise SystemExit(f"{self.name}: /metrics not complete within {timeout:g} s")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def spawn(name: str, cmd: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    port = free_port()
    cmd = [c.replace("{port}", str(port)) for c in cmd]
    log = workdir / f"{name.replace(' ', '_').replace('+', '')}.log"
    with open(log, "wb") as out:
        started = time.monotonic()
        popen = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})}
        )
    return Proc(name, popen, port, started, log)


def runbook(name: str, config: Path, workdir: Path) -> Proc:
    return spawn(
        name,
        [sys.executable, "-m", "exporter", "--config.file", str(config),
         "--web.listen-address", "127.0.0.1:{port}", "--log.level", "warn"],
        workdir,
    )  # fmt: skip


def postgres_exporter(name: str, dsn: str, workdir: Path, queries: Path | None) -> Proc:
    cmd = [need("prometheus-postgres-exporter"), "--web.listen-address=127.0.0.1:{port}",
           "--log.level=warn"]  # fmt: skip
    if queries is not None:
        cmd.append(f"--extend.query-path={queries}")
    return spawn(name, cmd, workdir, env={"DATA_SOURCE_NAME": dsn})


def blackbox_exporter(config: Path, workdir: Path) -> Proc:
    return spawn(
        "blackbox_exporter",
        [need("prometheus-blackbox-exporter"), f"--config.file={config}",
         "--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        workdir,
    )  # fmt: skip


def samples(body: str) -> int:
    """Series in an exposition: its non-comment, non-empty lines."""
    return sum(1 for line in body.splitlines() if line and not line.startswith("#"))


def wrk(url: str, connections: int, seconds: float, keep_alive: bool = True) -> dict[str, float]:
    """wrk with `connections` keep-alive clients for `seconds` (gzip accepted, as Prometheus
    does), or a new connection per request: requests/s, median and p99 latency in ms,
    errors."""
    close = [] if keep_alive else ["-H", "Connection: close"]
    out = subprocess.run(
        [need("wrk"), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
         "--timeout", "10s", "--latency", "-H", "Accept-Encoding: gzip", *close, url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]] if m else float("nan")

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "requests": float(total[1]) if total else 0.0,
        "errors": float(sum(int(x) for x in errors.groups()) if errors else 0)
        + (int(non2xx[1]) if non2xx else 0),
    }
