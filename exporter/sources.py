"""The registry of sources: the one list of what the exporter can collect.

A source is declared once, in its own module, as a subclass of `Collector` (a database
collector, in exporter/collectors/) or `ProbeKind` (a kind of probe, in exporter/probes/):

    class Tables(Collector):
        name = "tables"              # the key under `collectors:` and the `collector` label
        Settings = TablesSettings    # its config section (pydantic, unknown keys refused)
        first_run = 40               # its place when a target's collectors first start

        async def collect(self, conn) -> list[Metric]: ...

Defining the class registers it (`__init_subclass__`), as postgres_exporter's
`registerCollector` does from each collector file's `init()`. Python imports a package's
modules only when asked, so `discover()` imports every module of the two packages
(pkgutil): adding a module is enough, no list of names is kept anywhere else. The config's
`collectors:` section, the jobs of a target, the doctor's checks and the sections of
docs/metrics.md are all read from here (tests/test_registry.py holds everyone to that).

A collector object is made per target (and again when the target's settings change on a
reload), so state it keeps between runs -- which queues a connection has checked, the last
reason it logged -- lives on the object, not in module globals.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, ClassVar

from exporter.configtypes import Duration, Model
from exporter.metrics import SPECS, MetricSpec

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from exporter.config import Target
    from exporter.doctor import Report

# the packages whose modules declare sources
PACKAGES = ("exporter.collectors", "exporter.probes")
# where a collector with no `first_run` of its own runs: after the shipped ones
DEFAULT_FIRST_RUN = 100

_collectors: dict[str, type[Collector]] = {}
_probe_kinds: dict[str, type[ProbeKind]] = {}
_discovery = "not yet"  # -> "running" -> "done"


class CollectorSettings(Model):
    """What every collector's config section holds; a collector's `Settings` extends it."""

    enabled: bool = True
    interval: Duration | None = None  # None: the target's collect_interval
    timeout: Duration | None = None  # None: the target's collect_timeout


class Source:
    """What every source declares: a name and the metrics it serves."""

    name: ClassVar[str]
    # the `source` of its metric specs (exporter.metrics.spec), e.g. "collectors/queues.py":
    # the docs list those metrics under this source
    spec_sources: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def module_path(cls) -> str:
        """exporter.collectors.queues -> collectors/queues.py (the specs' `source`)."""
        return cls.__module__.removeprefix("exporter.").replace(".", "/") + ".py"

    @classmethod
    def specs(cls) -> list[MetricSpec]:
        wanted = cls.spec_sources or (cls.module_path(),)
        return [s for s in SPECS.values() if s.source in wanted]


class Collector(Source):
    """A database collector: one object per target, `collect` run by the scheduler on the
    target's connection at the collector's own interval.

    `conn` is the target's psycopg AsyncConnection, inside the run's read-only transaction
    with statement_timeout and lock_timeout set for it (exporter/db.py: no session state, no
    prepared statements, `db.savepoint` around a statement whose failure is handled). Raise
    on failure; the scheduler records it and drops this
    collector's series (`scheduler.PartialFailure` keeps the parts that worked)."""

    Settings: ClassVar[type[CollectorSettings]] = CollectorSettings
    # its place when a target's collectors first run (ties by name)
    first_run: ClassVar[int] = DEFAULT_FIRST_RUN

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a base class without a name is not a source
            _register(_collectors, cls)

    def __init__(self, target: Target, settings: CollectorSettings) -> None:
        self.target = target
        self.settings = settings

    async def collect(self, conn) -> list[Metric]:
        raise NotImplementedError

    async def doctor(self, conn, report: Report) -> None:
        """Checks `runbook-exporter doctor` runs for this collector (also when it is
        disabled: a finding then is only a note); none by default."""


class ProbeKind(Source):
    """A kind of probe of the apps' endpoints. There is one today (HTTP, exporter/probes/);
    the registry knows it for its metrics and their docs."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _register(_probe_kinds, cls)


def _register(registry: dict, cls: type[Source]) -> None:
    have = registry.get(cls.name)
    # a module imported again (a test reloading it) declares the same class anew
    if have is not None and _where(have) != _where(cls):
        raise ValueError(f"source {cls.name!r} is declared by {_where(have)} and {_where(cls)}")
    registry[cls.name] = cls


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def unregister(name: str) -> None:
    """Forget a source (for tests that register a throwaway one)."""
    _collectors.pop(name, None)
    _probe_kinds.pop(name, None)


def discover() -> None:
    """Import every module of the source packages once, so each declared source is known."""
    global _discovery
    if _discovery == "done":
        return
    if _discovery == "running":
        # a source module that validates a config while it is imported would see a partial
        # list of sources: say so instead of building the config's models from it
        raise RuntimeError(
            "the list of sources was asked for while the source modules were being imported"
        )
    _discovery = "running"
    try:
        for package in PACKAGES:
            pkg = importlib.import_module(package)
            for mod in pkgutil.iter_modules(pkg.__path__):
                if not mod.name.startswith("_"):
                    importlib.import_module(f"{package}.{mod.name}")
    except BaseException:
        _discovery = "not yet"
        raise
    _discovery = "done"


def collectors() -> list[type[Collector]]:
    """Every database collector, in the order a target's collectors first run."""
    discover()
    return sorted(_collectors.values(), key=lambda c: (c.first_run, c.name))


def collector(name: str) -> type[Collector]:
    discover()
    return _collectors[name]


def collector_names() -> list[str]:
    return [c.name for c in collectors()]


def probe_kinds() -> list[type[ProbeKind]]:
    discover()
    return sorted(_probe_kinds.values(), key=lambda p: p.name)


def all_sources() -> list[type[Source]]:
    return [*collectors(), *probe_kinds()]
