"""Health JSON: parse the body, check assertions, read per-component status.

Paths are JMESPath (the `jmespath` library), compiled once per endpoint.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from array import array
from typing import Any

import jmespath
from prometheus_client.core import Metric

from exporter.metrics import spec
from exporter.probes.config import Assertion, Components

SRC = "probes/healthjson.py"
COMPONENT_UP = spec(
    "runbook_health_component_up",
    "gauge",
    "1 when the component's status in the endpoint's health JSON is an `up` value, else 0.",
    ("app", "endpoint", "component"),
    SRC,
)
MAX_SHOWN = 80  # characters of a body value quoted in a failure message
# A health document is a few levels deep. The json module and whatever walks the result
# (jmespath, ==, json.dumps) recurse once per level: `[` x 300000 would hit RecursionError.
MAX_DEPTH = 64
# a JSON string, or an unterminated one running to the end: matched left to right in one pass,
# so brackets inside strings are skipped in linear time whatever the quotes and escapes
_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_STEP = bytes.maketrans(_BRACKETS, b"\x01\xff\x01\xff")  # +1 / -1 as signed bytes


class JSONFailure(Exception):
    pass


def nesting_depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings, found without parsing."""
    skeleton = _STRING_RE.sub(b"", text.encode("utf-8", "surrogatepass"))
    steps = skeleton.translate(_STEP, _NOT_BRACKETS)
    return max(itertools.accumulate(array("b", steps), initial=0))


def parse(body: bytes | None) -> Any:
    if not body:
        raise JSONFailure("empty body, JSON expected")
    try:
        # what json.loads(bytes) does: UTF-8, -16 or -32, told by the first bytes
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as e:
        raise JSONFailure(f"invalid JSON: {e}") from None
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise JSONFailure(f"JSON nested {depth} levels deep, above {MAX_DEPTH}; not parsed")
    try:
        return json.loads(text)
    except ValueError as e:
        raise JSONFailure(f"invalid JSON: {e}") from None


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def number(value: Any) -> float | None:
    """A JSON value as a float: numbers, booleans, numeric strings; None otherwise."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


class Checker:
    def __init__(self, assertions: list[Assertion]) -> None:
        self.items = [(a, a.kind, jmespath.compile(a.path)) for a in assertions]

    def failures(self, doc: Any) -> list[str]:
        out = []
        for a, kind, expr in self.items:
            value = expr.search(doc)
            if value is None and not (kind == "equals" and a.equals is None):
                out.append(f"{a.describe()}: {a.path} is missing")
            elif kind == "equals":
                if value != a.equals:
                    out.append(f"{a.describe()}: got {_shown(value)}")
            elif kind == "in":
                if value not in a.in_:
                    out.append(f"{a.describe()}: got {_shown(value)}")
            else:
                n = number(value) if not isinstance(value, bool) else None
                if n is None:
                    out.append(f"{a.describe()}: not a number: {_shown(value)}")
                elif (a.min is not None and n < a.min) or (a.max is not None and n > a.max):
                    out.append(f"{a.describe()}: got {n:g}")
        return out


def _is_up(value: Any, up: list) -> bool:
    for u in up:
        if isinstance(u, bool) or isinstance(value, bool):
            if isinstance(u, bool) and isinstance(value, bool) and u == value:
                return True
        elif isinstance(u, str) and isinstance(value, str):
            if u.lower() == value.strip().lower():
                return True
        elif u == value:
            return True
    return False


class ComponentReader:
    def __init__(self, cfg: Components) -> None:
        self.cfg = cfg
        self.path = jmespath.compile(cfg.path)
        self.status = jmespath.compile(cfg.status) if cfg.status else None
        self.include = set(cfg.include) if cfg.include is not None else None

    def read(self, doc: Any) -> dict[str, float]:
        node = self.path.search(doc)
        items: list[tuple[str, Any]] = []
        if isinstance(node, dict):
            items = [(str(k), v) for k, v in node.items()]
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, dict) and item.get(self.cfg.name_field) is not None:
                    items.append((str(item[self.cfg.name_field]), item))
        if self.include is not None:
            items = [(k, v) for k, v in items if k in self.include]
        items.sort(key=lambda kv: kv[0])
        out: dict[str, float] = {}
        for name, value in items[: self.cfg.max]:
            status = value
            if isinstance(value, dict) and self.status is not None:
                status = self.status.search(value)
            out[name[:100]] = 1.0 if _is_up(status, self.cfg.up) else 0.0
        return out

    def families(self, doc: Any, app: str, endpoint: str) -> list[Metric]:
        fam = COMPONENT_UP.family()
        for name, up in self.read(doc).items():
            fam.add_metric([app, endpoint, name], up)
        return [fam] if fam.samples else []
