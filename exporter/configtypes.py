"""Shared pieces of the configuration models: strict base model, durations, label values."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
LABEL_VALUE_RE = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,62}$"
IDENT_RE = re.compile(r"^[^\x00]{1,63}$")


def parse_duration(value: Any) -> float:
    """'90s', '5m', '1h30m', '250ms' or a bare number of seconds -> seconds (float)."""
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
    if seconds < 0:
        raise ValueError(f"duration {value!r} must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_RE)]
Ratio = Annotated[float, Field(ge=0, le=1)]


def _listify(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


StatusList = Annotated[list[str], BeforeValidator(_listify)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def ordered_pair(model: BaseModel, low: str, high: str) -> None:
    """A warning threshold must not be above its critical one."""
    if getattr(model, low) > getattr(model, high):
        raise ValueError(
            f"{low} ({getattr(model, low)}) must not be above {high} ({getattr(model, high)})"
        )


def require_unique(names: list[str], message: str) -> None:
    """`{message}: [the duplicates]` when a name occurs more than once."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{message}: {dupes}")
