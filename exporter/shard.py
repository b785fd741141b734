"""Sharding: N replicas of the exporter share one configuration, each collecting a stable slice.

`--shard=i/N` (or `--shard=auto/N`, the ordinal taken from a Kubernetes StatefulSet pod's name)
keeps, of the configuration's per-item lists, the items this replica owns: targets (with their
queues, retention tables and queries), endpoints, backups and poolers. Every item is owned by
exactly one of the N replicas, so their /metrics together carry every series once.

Ownership is rendezvous (highest random weight) hashing of the item's kind and name: replica
`i` owns an item when `score(i, item)` is the highest of the N scores. An item's owner depends
only on its own name and N, never on the other items or their order, so adding or removing a
target moves nothing else. Changing N moves only what must move: growing N to N+1 moves about
1/(N+1) of the items, all to the new replica (hash mod N would move about N/(N+1) of them).
An SQL backup goes with its target, since it reads through the target's session.

The score is the first 8 bytes (big-endian) of BLAKE2b over `"<i>\\0<kind>\\0<name>"`
(an endpoint's name is `<app>\\0<endpoint>`), identical in every process and Python version
(Python's own `hash()` is salted per process).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from dataclasses import dataclass

from prometheus_client.core import Metric

from exporter.config import Config, ConfigError
from exporter.metrics import spec

log = logging.getLogger("exporter")
SRC = "shard.py"
# where --shard=auto/N reads the pod name first (the StatefulSet sets it from metadata.name);
# the hostname, which Kubernetes sets to the pod name, when it is unset
POD_NAME_ENV = "POD_NAME"
_ORDINAL = re.compile(r"-(\d+)$")

SHARD = spec(
    "runbook_exporter_shard",
    "gauge",
    "This replica's shard index i of --shard=i/N (0 when not sharded).",
    (),
    SRC,
)
SHARDS = spec(
    "runbook_exporter_shards",
    "gauge",
    "The number of shards N the configuration is split into (1 when not sharded); the "
    "replicas serving distinct runbook_exporter_shard values should number this many.",
    (),
    SRC,
)

HELP = (
    "collect only this replica's slice of the configuration: i/N (0 <= i < N) or auto/N "
    "(i from the StatefulSet pod name's ordinal, $POD_NAME or the hostname); N replicas "
    "with the same N and config cover every target, endpoint, backup and pooler exactly once"
)


def score(index: int, kind: str, name: str) -> int:
    """The rendezvous weight of shard `index` for an item; the highest wins."""
    data = f"{index}\0{kind}\0{name}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def owner(kind: str, name: str, shards: int) -> int:
    """The shard (0..shards-1) that owns an item; ties (2**-64) go to the lower index."""
    return max(range(shards), key=lambda i: (score(i, kind, name), -i))


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, kind: str, name: str) -> bool:
        return self.count == 1 or owner(kind, name, self.count) == self.index

    def select(self, config: Config) -> Config:
        """The part of `config` this shard collects (all of it when not sharded)."""
        if self.count == 1:
            return config
        targets = [t for t in config.targets if self.owns("target", t.name)]
        apps = []
        for a in config.apps:
            mine = [e for e in a.endpoints if self.owns("endpoint", f"{a.name}\0{e.name}")]
            if mine:
                apps.append(a.model_copy(update={"endpoints": mine}))
        backups = [
            b
            for b in config.backups
            # an SQL backup reads through its target's session: it goes where the target does
            if (self.owns("target", b.sql.target) if b.sql else self.owns("backup", b.name))
        ]
        poolers = [p for p in config.poolers if self.owns("pooler", p.name)]
        mine = config.model_copy(
            update={"targets": targets, "apps": apps, "backups": backups, "poolers": poolers}
        )
        log.info(
            "shard selected its part of the configuration",
            extra={"shard": str(self), **counts(mine, config)},
        )
        return mine

    def describe(self, mine: Config, full: Config) -> str:
        """What --check-config prints: how much of the configuration this shard owns."""
        owned = ", ".join(f"{k} {v}" for k, v in counts(mine, full).items())
        return f"shard {self}: owns {owned}"

    def families(self) -> list[Metric]:
        return [SHARD.one(self.index), SHARDS.one(self.count)]


UNSHARDED = Shard()


def counts(mine: Config, full: Config) -> dict[str, str]:
    """`owned/total` per kind, for the log and --check-config."""

    def endpoints(c: Config) -> int:
        return sum(len(a.endpoints) for a in c.apps)

    return {
        "targets": f"{len(mine.targets)}/{len(full.targets)}",
        "endpoints": f"{endpoints(mine)}/{endpoints(full)}",
        "backups": f"{len(mine.backups)}/{len(full.backups)}",
        "poolers": f"{len(mine.poolers)}/{len(full.poolers)}",
    }


def parse(value: str | None, environ: dict[str, str] | None = None) -> Shard:
    """`i/N` or `auto/N` (the ordinal from $POD_NAME or the hostname); ConfigError otherwise."""
    if value is None:
        return UNSHARDED
    flag = f"--shard={value}"
    m = re.fullmatch(r"\s*(\d+|auto)\s*/\s*(\d+)\s*", value)
    if m is None:
        raise ConfigError(f"{flag}: expected i/N or auto/N with whole numbers, e.g. 0/3")
    count = int(m.group(2))
    if count < 1:
        raise ConfigError(f"{flag}: N must be at least 1")
    if m.group(1) == "auto":
        env = os.environ if environ is None else environ
        source, name = (
            (f"${POD_NAME_ENV}", env[POD_NAME_ENV])
            if env.get(POD_NAME_ENV)
            else ("the hostname", socket.gethostname())
        )
        ordinal = _ORDINAL.search(name)
        if ordinal is None:
            raise ConfigError(
                f"{flag}: {source} {name!r} does not end in -<ordinal> as a StatefulSet "
                f"pod's name does (e.g. runbook-exporter-0); give the index as i/{count}"
            )
        index, where = int(ordinal.group(1)), f" (the ordinal of {source} {name!r})"
    else:
        index, where = int(m.group(1)), ""
    if index >= count:
        raise ConfigError(
            f"{flag}: shard index {index}{where} must be below N={count}: shards are "
            f"numbered 0 to {count - 1} (a StatefulSet's replicas must equal N)"
        )
    return Shard(index, count)
