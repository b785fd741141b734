"""The files the package ships beside its code (exporter/shipped.py): the runbook docs and the
Alertmanager example, found in a source checkout here (tests/test_wheel.py reads them from an
installed wheel), and `runbooks` / `alertmanager-example` writing them out."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from exporter import shipped

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ROOT / "docs" / "runbooks"
ALERTMANAGER = ROOT / "alerts" / "alertmanager.yml"


def setup_py_shipped() -> dict[str, str]:
    """setup.py's SHIPPED mapping, read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "SHIPPED":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no SHIPPED mapping")


def test_setup_py_and_pyproject_ship_what_shipped_py_reads():
    assert setup_py_shipped() == {f"exporter._shipped.{k}": v for k, v in shipped.SOURCES.items()}
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "packages" not in data, "setup.py lists the packages (it maps the shipped ones)"
    for top, pattern in shipped.PATTERNS.items():
        assert data["package-data"][f"exporter._shipped.{top}"] == [pattern]
    # the rule and dashboard data of the other subpackages ships too, whatever its format
    for sub in ("rules", "dashboards"):
        for ext in ("yml", "yaml", "json", "md"):
            assert f"{sub}/**/*.{ext}" in data["package-data"]["exporter"]


def test_every_runbook_doc_and_the_alertmanager_example_ship_and_nothing_else():
    expected = {f"runbooks/{p.name}" for p in RUNBOOKS.glob("*.md")} | {"alerts/alertmanager.yml"}
    assert len(expected) > 50
    assert set(shipped.names()) == expected
    assert shipped.read_text("alerts/alertmanager.yml") == ALERTMANAGER.read_text()
    docs = shipped.runbooks()
    assert docs["QueueJobsStuck"] == (RUNBOOKS / "QueueJobsStuck.md").read_text()
    assert shipped.locate("runbooks/QueueJobsStuck.md") == RUNBOOKS / "QueueJobsStuck.md"
    assert shipped.RUNBOOK_URL_BASE.endswith("/docs/runbooks/")


@pytest.mark.parametrize(
    "name",
    [
        "alerts/queues.rules.yml",  # in alerts/, but not shipped from there
        "runbooks/NoSuchAlert.md",
        "runbooks/../../pyproject.toml",
        "runbooks//etc/passwd",
        "docs/runbooks/QueueJobsStuck.md",
        "runbooks",
        "",
    ],
)
def test_locate_refuses_what_is_not_shipped(name: str):
    with pytest.raises(shipped.NotShipped):
        shipped.locate(name)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_runbooks_command_writes_every_doc(tmp_path: Path):
    out = tmp_path / "wiki" / "runbooks"
    (out.parent).mkdir()
    (out.parent / "keep.md").write_text("not ours")
    r = run_cli("runbooks", "--output", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = {p.name: p.read_text() for p in out.iterdir()}
    assert written == {p.name: p.read_text() for p in RUNBOOKS.glob("*.md")}
    assert r.stdout.strip() == f"wrote {len(written)} runbooks to {out}"
    assert (out.parent / "keep.md").read_text() == "not ours"


def test_runbooks_command_says_in_one_line_why_it_cannot_write(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = run_cli("runbooks", "--output", str(blocker / "runbooks"), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: cannot write the runbooks to {blocker / 'runbooks'}: ")


def test_alertmanager_example_command_prints_the_shipped_file(tmp_path: Path):
    r = run_cli("alertmanager-example", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ALERTMANAGER.read_text()
