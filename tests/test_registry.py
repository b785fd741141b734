"""The registry (exporter/sources.py) is the only list of sources: the config's `collectors:`
keys, a target's jobs, the doctor's checks and the sections of docs/metrics.md all follow it,
and no other module spells out the collectors' names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator, MutableMapping, MutableSequence, MutableSet
from pathlib import Path

import pytest

from exporter import sources
from exporter.collectors import thresholds as db_thresholds
from exporter.config import PgThresholds, QueueThresholds, parse_config
from exporter.metrics import SPECS, ThresholdSeries, load_all_specs, spec
from exporter.probes import thresholds as probe_thresholds
from exporter.probes.config import Thresholds as EndpointThresholds
from tools.metricsdoc import DOC, render

PACKAGE = Path(sources.__file__).parent
ROOT = PACKAGE.parent

# a source as a newcomer would add one: this module dropped into exporter/collectors/
THROWAWAY = """
from pydantic import Field

from exporter.metrics import spec
from exporter.sources import Collector, CollectorSettings

ROWS = spec(
    "runbook_throwaway_rows", "gauge", "Rows the throwaway source counted.", ("target",),
    "collectors/throwaway.py",
)


class ThrowawaySettings(CollectorSettings):
    rows: int = Field(1, ge=1)


class Throwaway(Collector):
    name = "throwaway"
    Settings = ThrowawaySettings
    first_run = 35  # between queues and tables

    async def collect(self, conn):
        cur = await conn.execute("SELECT %s::int", (self.settings.rows,))
        (n,) = await cur.fetchone()
        return [ROWS.one(n, self.target.name)]

    async def doctor(self, conn, report):
        report.ok(f"throwaway source checked ({self.settings.rows} rows)")
"""

# run in a fresh interpreter: the config's models are built from the registry at import
PROBE = """
import asyncio, contextlib, io, json, sys

import exporter.collectors

exporter.collectors.__path__.append(sys.argv[1])  # as if the module were in the package

from exporter.config import ConfigError, parse_config
from exporter.db import TargetDB, open_connection
from exporter.doctor import Report, check_target
from tools.metricsdoc import render
from exporter.runtime import _target_jobs

dsn = json.dumps(sys.argv[2])
out = {}
cfg = parse_config(f"targets: [{{name: t, dsn: {dsn}, collectors: {{throwaway: {{rows: 3}}}}}}]")
t = cfg.targets[0]
out["keys"] = list(type(t.collectors).model_fields)
out["rows"] = t.collectors.throwaway.rows
out["enabled"] = [n for n, _ in t.enabled_collectors()]
off = parse_config(
    f"targets: [{{name: t, dsn: {dsn}, collectors: {{throwaway: {{enabled: false}}}}}}]"
)
out["enabled_when_off"] = [n for n, _ in off.targets[0].enabled_collectors()]
try:
    parse_config("targets: [{name: t, dsn: 'host=x', collectors: {throwaway: {nope: 1}}}]", "c.yml")
except ConfigError as e:
    out["unknown_key"] = str(e)
out["docs"] = render()


async def jobs():
    db = TargetDB(t)
    js = _target_jobs(db)
    job = next(j for j in js if j.key == ("t", "throwaway"))
    fams = await job.run()
    await db.close()
    return [list(j.key) for j in js], [[s.name, s.labels, s.value] for f in fams for s in f.samples]


out["jobs"], out["samples"] = asyncio.run(jobs())


async def doctor():
    buf = io.StringIO()
    async with await open_connection(t) as conn:
        with contextlib.redirect_stdout(buf):
            await check_target(conn, t, Report())
    return buf.getvalue()


out["doctor"] = asyncio.run(doctor())
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def with_throwaway(tmp_path_factory: pytest.TempPathFactory, pg_server: str) -> dict:
    """What config, runtime, docs and doctor make of a source added as one module."""
    where = tmp_path_factory.mktemp("source")
    (where / "throwaway.py").write_text(THROWAWAY)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(where), pg_server],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,  # tools.metricsdoc renders the docs
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_added_module_is_a_config_section(with_throwaway: dict) -> None:
    shipped = sources.collector_names()
    assert with_throwaway["keys"] == [*shipped[:3], "throwaway", *shipped[3:]]
    assert with_throwaway["rows"] == 3
    # its settings model refuses unknown keys, with the path and line like every section
    assert with_throwaway["unknown_key"] == (
        "c.yml:1: targets[0].collectors.throwaway.nope: unknown key"
    )


def test_an_added_module_runs_as_a_job_of_each_target(with_throwaway: dict) -> None:
    shipped = sources.collector_names()
    order = [*shipped[:3], "throwaway", *shipped[3:]]  # by first_run
    assert with_throwaway["enabled"] == order
    assert with_throwaway["jobs"] == [["t", name] for name in order]
    assert with_throwaway["enabled_when_off"] == shipped
    # the job's run is the source object's collect on the target's real connection
    assert with_throwaway["samples"] == [["runbook_throwaway_rows", {"target": "t"}, 3.0]]


def test_an_added_module_gets_its_docs_section(with_throwaway: dict) -> None:
    docs = with_throwaway["docs"]
    heading = "## Collector `throwaway` (`exporter/collectors/throwaway.py`"
    assert heading in docs
    section = docs.split(heading, 1)[1].split("\n## ", 1)[0]
    assert "| `runbook_throwaway_rows` | gauge | `target` |" in section


def test_an_added_module_gets_its_doctor_checks(with_throwaway: dict) -> None:
    assert "ok       throwaway source checked (3 rows)" in with_throwaway["doctor"]
    # the shipped collectors' checks still run
    assert "pg_stat_statements" in with_throwaway["doctor"]


@pytest.fixture
def registered() -> Iterator[type[sources.Collector]]:
    """A collector registered in this process, removed again afterwards."""
    extra = spec("runbook_test_registered", "gauge", "A test's.", ("target",), "tests/registry")

    class Registered(sources.Collector):
        name = "test_registered"
        spec_sources = ("tests/registry",)

    try:
        yield Registered
    finally:
        sources.unregister(Registered.name)
        SPECS.pop(extra.name)


def test_registering_and_unregistering_in_process(registered: type[sources.Collector]) -> None:
    assert sources.collector("test_registered") is registered
    assert sources.collector_names()[-1] == "test_registered"  # default first_run: last
    assert "## Collector `test_registered`" in render()
    sources.unregister("test_registered")
    assert "test_registered" not in sources.collector_names()
    assert "## Collector `test_registered`" not in render()


def test_a_name_is_declared_once() -> None:
    with pytest.raises(ValueError, match="'queues' is declared by"):

        class Twin(sources.Collector):
            name = "queues"


def test_docs_have_a_section_per_source_in_registry_order() -> None:
    text = DOC.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## Collector ")]
    assert [h.split("`")[1] for h in headings] == sources.collector_names()
    assert [p.name for p in sources.probe_kinds()] == ["http"]
    assert "## Probe kind `http`" in text


def test_every_metric_of_a_source_package_is_owned_once() -> None:
    """Each metric of exporter/collectors and exporter/probes is in one source's section,
    or a thresholds module's (series from the config, not from a source)."""
    owners: dict[str, str] = {}
    for source in sources.all_sources():
        for s in source.specs():
            assert s.name not in owners, f"{s.name}: {owners[s.name]} and {source.name}"
            owners[s.name] = source.name
    for s in load_all_specs().values():
        if s.source.startswith(("collectors/", "probes/")) and s.name not in owners:
            assert s.source.endswith("/thresholds.py"), f"{s.name} belongs to no source"


def _imports_a_collector_by_name(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "import_module"
        and "exporter.collectors" in ast.unparse(node.args[0])
    )


def _module_lists_names(tree: ast.AST, names: set[str]) -> list[str]:
    """Literal collections of two or more collector names, `x.collectors.<name>` attribute
    reads and `import_module(f"exporter.collectors.{name}")` calls: the ways a list of
    collectors was kept outside the registry."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            consts = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            if len(consts & names) >= 2:
                found.append(f"line {node.lineno}: {sorted(consts & names)}")
        elif isinstance(node, ast.Attribute) and node.attr in names:
            if isinstance(node.value, ast.Attribute) and node.value.attr == "collectors":
                found.append(f"line {node.lineno}: .collectors.{node.attr}")
        elif _imports_a_collector_by_name(node):
            found.append(f"line {node.lineno}: import_module of a collector")
    return found


def test_no_module_but_the_registry_lists_the_collectors() -> None:
    names = set(sources.collector_names())
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "sources.py":
            continue  # discovery imports the source packages' modules
        found = _module_lists_names(ast.parse(path.read_text()), names)
        if found:
            offenders[str(path.relative_to(PACKAGE))] = found
    assert not offenders
    # the old unread `NAME = "..."` constants are gone: the class's `name` is the name
    for path in (PACKAGE / "collectors").glob("*.py"):
        assert "\nNAME = " not in path.read_text(), path


def test_the_ast_check_finds_the_old_lists() -> None:
    names = {"connections", "database", "queues"}
    old = 'DB = ("connections", "database", "queues")\nt.collectors.queues.enabled\n'
    old += 'importlib.import_module(f"exporter.collectors.{name}")\n'
    assert len(_module_lists_names(ast.parse(old), names)) == 3


def test_each_collector_keeps_its_state_on_its_object() -> None:
    """No mutable module globals in a collector module (a dict keyed by target, a weak dict
    keyed by connection): they would be shared by every target and outlive a reload."""
    for source in sources.collectors():
        module = sys.modules[source.__module__]
        shared = [
            name
            for name, value in vars(module).items()
            if not name.startswith("__")
            and not name.isupper()  # a CONSTANT's table is not state
            and isinstance(value, MutableMapping | MutableSequence | MutableSet)
        ]
        assert not shared, f"{source.name}: module state {shared}"


# --- thresholds as series: one helper for databases and endpoints -----------------------


@pytest.mark.parametrize(
    ("model", "mappings"),
    [
        (PgThresholds, [db_thresholds.PG_THRESHOLDS]),
        (QueueThresholds, [db_thresholds.QUEUE_THRESHOLDS]),
        (
            EndpointThresholds,
            [probe_thresholds.ENDPOINT_THRESHOLDS, *probe_thresholds.APP_THRESHOLDS.values()],
        ),
    ],
)
def test_every_threshold_field_is_served(model, mappings) -> None:
    """A threshold added to a config model without a series would never reach a rule."""
    mapped = {field for m in mappings for field in m}
    assert mapped == set(model.model_fields)


def test_threshold_series_labels_and_order() -> None:
    config = parse_config(
        """
targets:
  - name: a
    dsn: host=x
    thresholds: {long_query_warning: 10s, long_query_critical: 20s}
    queues: [{table: jobs, thresholds: {depth_warning: 7}}]
"""
    )
    fams = {f.name: f for f in db_thresholds.families(config)}
    assert [
        (s.labels, s.value) for s in fams["runbook_pg_long_query_threshold_seconds"].samples
    ] == [
        ({"target": "a", "severity": "warning"}, 10.0),
        ({"target": "a", "severity": "critical"}, 20.0),
    ]
    depth = fams["runbook_queue_depth_threshold"].samples[0]
    assert depth.labels == {"target": "a", "queue": "jobs", "severity": "warning"}
    assert depth.value == 7
    window = fams["runbook_queue_recent_window_seconds"].samples[0]
    assert window.labels == {"target": "a", "queue": "jobs"} and window.value == 300
    # families in the order their specs first appear in the mappings (queues, then target)
    names = list(fams)
    assert (names[0], names[-1]) == (
        "runbook_queue_depth_threshold",
        "runbook_pg_rollback_ratio_threshold",
    )


def test_threshold_series_leave_out_empty_families() -> None:
    s = ThresholdSeries(probe_thresholds.ENDPOINT_THRESHOLDS)
    assert s.families() == []


def test_importing_the_config_imports_no_source() -> None:
    """The `collectors:` model is built from the registry on the first validation, so what
    only imports the config (the web config, the HTTP server) loads no collector nor psycopg."""
    code = (
        "import sys, exporter.config\n"
        "print(sorted(m for m in sys.modules if m.startswith(('exporter.collectors.', 'psycopg'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
