"""The render cache behind /metrics.

/metrics is rendered once per change of the result store (`Store.version`) by one render
thread (single-flight), plain and gzip, and at most once per two render durations, so a
scrape flood cannot turn into a render flood; a scrape is a copy of cached bytes.

A change is usually one job's new result, so each family's text is kept while its object
lives in the store (FamilyTexts) and a render joins them: formatting every sample again made
the render grow with the whole exposition on every change, which was what gave out first in
one process with 100 targets and 2,000 endpoints (bench/scale.py, docs/deployment.md).
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from exporter.runtime import Exporter


@dataclass(frozen=True)
class Rendered:
    version: int
    body: bytes
    gzipped: bytes
    at: float  # monotonic time the render finished
    cost: float  # seconds the render took


class _Listed:
    """The given families as a collector, for generate_latest."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class FamilyTexts:
    """The text format of each family object, reused while the same object is served.

    Families of one name (one per target or endpoint) are served as one block: the first one's
    HELP and TYPE lines, then every one's samples in order -- what generate_latest makes of
    the merged family. A family whose text has more than those two comment lines (OpenMetrics
    `_created`/`_gsum`/`_gcount` samples, which generate_latest moves behind the block) cannot
    be joined that way: render() returns None and the caller renders the whole registry.
    """

    def __init__(self) -> None:
        self._texts: dict[int, tuple[Metric, bytes, bytes]] = {}  # id -> (family, head, body)

    def render(self, families: list[Metric]) -> bytes | None:
        texts: dict[int, tuple[Metric, bytes, bytes]] = {}
        blocks: dict[str, list[bytes]] = {}
        for fam in families:
            hit = self._texts.get(id(fam))
            if hit is None or hit[0] is not fam:  # an id can be reused by a new object
                text = generate_latest(_Listed([fam]))
                end = text.index(b"\n", text.index(b"\n") + 1) + 1
                head, body = text[:end], text[end:]
                if body.startswith(b"# ") or b"\n# " in body:
                    return None
                hit = (fam, head, body)
            texts[id(fam)] = hit
            block = blocks.get(fam.name)
            if block is None:
                blocks[fam.name] = [hit[1], hit[2]]
            else:
                block.append(hit[2])
        self._texts = texts  # only what is served now: bounded by the exposition
        return b"".join(b"".join(block) for block in blocks.values())


class MetricsCache:
    """The exposition of `exporter.registry`, rendered again only when the store changed.

    `fresh()` is the loop's cheap check; `get()` renders (on the render thread) when needed.
    Concurrent callers of a new version wait on one lock and find the render done. While a
    render is younger than `gap_factor` times its own cost the previous one is served, which
    bounds rendering to a third of one core however hard /metrics is hit (for the demo's
    409 series that is a 10 ms window; for 45,000 series about one second).
    """

    def __init__(self, exporter: Exporter, gap_factor: float = 2.0) -> None:
        self._exporter = exporter
        self._gap_factor = gap_factor
        self._lock = threading.Lock()
        self._entry: Rendered | None = None
        self._texts = FamilyTexts()

    def fresh(self) -> Rendered | None:
        e = self._entry
        if e is None:
            return None
        if e.version == self._exporter.store.version:
            return e
        if time.monotonic() - e.at < e.cost * self._gap_factor:
            return e
        return None

    def get(self) -> Rendered:
        with self._lock:
            e = self.fresh()
            if e is not None:
                return e
            version = self._exporter.store.version  # read first: a put during the render
            started = time.monotonic()  # leaves the entry stale, so the next scrape renders
            body = self._texts.render(self._exporter.families())
            if body is None:
                body = generate_latest(self._exporter.registry)
            gzipped = gzip.compress(body, compresslevel=6, mtime=0)
            now = time.monotonic()
            self._entry = e = Rendered(version, body, gzipped, now, now - started)
            return e
