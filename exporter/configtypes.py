"""Shared pieces of the configuration models: strict base model, durations, label values."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# the units of Prometheus durations, so rule files (`for: 1w`) parse with the same function
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_UNITS["y"] = 365 * _UNITS["d"]
LABEL_VALUE_RE = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,62}$"
IDENT_RE = re.compile(r"^[^\x00]{1,63}$")
# no duration the exporter uses is longer than a few weeks; ten years catches a runaway
# number (1e300, a unit typo) while leaving every sensible threshold alone
MAX_DURATION = 3650 * 86400.0
# the shortest collector interval: each run opens queries on the database
MIN_COLLECT_INTERVAL = 1.0
# the shortest probe interval: catches "1ms" written for "1m" (1,000 requests a second against
# the app) while leaving 100 ms and up for tests and very fast health checks
MIN_PROBE_INTERVAL = 0.1
# PostgreSQL takes statement_timeout and lock_timeout in whole milliseconds: less is 0 = off
MIN_PG_TIMEOUT = 0.001


def parse_duration(value: Any) -> float:
    """'90s', '5m', '1h30m', '250ms', '1w' or a bare number of seconds -> seconds (float).

    Finite, not negative and at most MAX_DURATION: `.inf` and `.nan` are refused here, so no
    interval or timeout can freeze a job or disable a bound."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        pos, seconds = 0, 0.0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(text) or pos == 0:
            raise ValueError(
                f"invalid duration {value!r}: use a number and a unit, e.g. 250ms, 30s, 5m, 1h30m"
            )
    else:
        raise ValueError(f"invalid duration {value!r}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"duration {value!r} must be a finite number")
    if seconds < 0:
        raise ValueError(f"duration {value!r} must not be negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {value!r} is longer than ten years")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_RE)]
Ratio = Annotated[float, Field(ge=0, le=1)]


def _listify(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


StatusList = Annotated[list[str], BeforeValidator(_listify)]


class Model(BaseModel):
    # allow_inf_nan=False: no float field (ratio, scale, assertion bound) takes .inf or .nan
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FieldError(ValueError):
    """A model-level check that belongs to one field: the error formatter appends `path` to
    the model's location, so the message points at the line that has to change."""

    def __init__(self, path: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.path = path

    @staticmethod
    @contextmanager
    def at(*path: str | int) -> Iterator[None]:
        try:
            yield
        except FieldError:
            raise
        except ValueError as e:
            raise FieldError(path, str(e)) from None


def ordered_pair(model: BaseModel, low: str, high: str) -> None:
    """A warning threshold must not be above its critical one."""
    if getattr(model, low) > getattr(model, high):
        raise ValueError(
            f"{low} ({getattr(model, low)}) must not be above {high} ({getattr(model, high)})"
        )


def at_most(name: str, value: float, limit_name: str, limit: float) -> None:
    """`name` must not exceed `limit_name` (both durations in seconds)."""
    if value > limit:
        raise ValueError(f"{name} ({value:g}s) must not exceed {limit_name} ({limit:g}s)")


def at_least(name: str, value: float, minimum: float, why: str) -> None:
    """`name` must be at least `minimum` seconds; `why` says what a smaller value breaks."""
    if value < minimum:
        raise ValueError(f"{name} ({value:g}s) must be at least {minimum:g}s: {why}")


def require_unique(names: list[str], message: str) -> None:
    """`{message}: [the duplicates]` when a name occurs more than once."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{message}: {dupes}")
