"""Configuration of apps and their HTTP endpoints (issue 4, docs/probes.md).

An app groups endpoints; `defaults` at app level apply to each of its endpoints unless the
endpoint sets the key itself (headers, tls and thresholds are merged key by key). Thresholds
default to the source runbooks' table (shared/runbooks/README.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import jmespath
import jmespath.exceptions
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator

from exporter.configtypes import (
    MIN_PROBE_INTERVAL,
    Duration,
    FieldError,
    LabelValue,
    Model,
    Ratio,
    at_least,
    ordered_pair,
    require_unique,
)
from exporter.secrets import looks_secret, register_secret, safe_url

MiB = 1024 * 1024
DAY = 86400.0
# snake_case Prometheus metric names, without the colon that is reserved for recording rules
METRIC_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
APP_METRIC_PREFIX = "runbook_app_"
# the Pool model's field paths (probes/pool.py reads them); each but `total` is a pool gauge
POOL_FIELDS = ("size", "in_use", "idle", "waiting", "overflow", "max_overflow", "total")
# suffixes that mean something else in the exposition format, and the pool gauges' names
_RESERVED_SUFFIXES = ("_total", "_count", "_sum", "_bucket", "_created", "_info")
_POOL_NAMES = {f"pool_{f}" for f in POOL_FIELDS if f != "total"}
# what a value of the app's metrics JSON may mean (issue 14), and the units each may be given
# in: the exporter serves it normalised to base units under a fixed name the shipped rules read
MEANING_UNITS: dict[str, dict[str, float]] = {
    "error_ratio": {"ratio": 1.0, "percent": 0.01},
    "latency_p50": {"seconds": 1.0, "milliseconds": 0.001},
    "latency_p95": {"seconds": 1.0, "milliseconds": 0.001},
    "latency_p99": {"seconds": 1.0, "milliseconds": 0.001},
    "latency_average": {"seconds": 1.0, "milliseconds": 0.001},
    "memory_ratio": {"ratio": 1.0, "percent": 0.01},
}
Meaning = Literal[
    "error_ratio", "latency_p50", "latency_p95", "latency_p99", "latency_average", "memory_ratio"
]
Unit = Literal["ratio", "percent", "seconds", "milliseconds"]
# the names (without runbook_app_) of the normalised series and their thresholds
# (probes/appmetrics.py, probes/thresholds.py): a configured name must not take one
MEANING_NAMES = {
    "error_ratio",
    "error_ratio_threshold",
    "latency_p50_seconds",
    "latency_p95_seconds",
    "latency_p99_seconds",
    "latency_average_seconds",
    "latency_p95_threshold_seconds",
    "latency_average_threshold_seconds",
    "memory_ratio",
    "memory_ratio_threshold",
}
# what `promtool check metrics` rejects in names (its promlint unit rules)
_ABBREVIATED_UNITS = {
    "s",
    "ms",
    "us",
    "ns",
    "sec",
    "b",
    "kb",
    "mb",
    "gb",
    "tb",
    "pb",
    "m",
    "h",
    "d",
}
_NON_BASE_UNITS = {
    "minutes": "seconds",
    "hours": "seconds",
    "days": "seconds",
    "weeks": "seconds",
    "bits": "bytes",
}
_BASE_UNITS = {"seconds", "bytes", "meters", "grams", "joules", "volts", "amperes", "celsius"}
_UNIT_PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo")
_UNIT_PREFIXES += ("kibi", "mega", "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")


def _jmespath(expr: str) -> str:
    try:
        jmespath.compile(expr)
    except jmespath.exceptions.JMESPathError as e:
        raise ValueError(f"invalid JMESPath expression: {str(e).splitlines()[0]}") from None
    return expr


JMESPath = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_jmespath)]


def parse_size(value: Any) -> int:
    """1048576, '1MiB', '512KiB', '10MB' -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*", str(value))
    if not m:
        raise ValueError(f"invalid size {value!r}: use bytes or a unit, e.g. 512KiB, 1MiB, 10MB")
    units = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": MiB, "GB": 10**9, "GiB": 1024**3}
    return int(m.group(1)) * units[m.group(2) or "B"]


ByteSize = Annotated[int, BeforeValidator(parse_size), Field(ge=1, le=1024**3)]


class SecretError(Exception):
    """A secret could not be read; the message names where from, never the value."""


class SecretRef(Model):
    """A value read at probe time from an environment variable or a file (so it can rotate)."""

    env: str | None = Field(None, min_length=1)
    file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file")
        return self

    def load(self) -> str:
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretError(f"environment variable {self.env} is not set")
        else:
            try:
                value = Path(self.file or "").read_text().strip()
            except OSError as e:
                raise SecretError(f"cannot read {self.file}: {e.strerror}") from None
        register_secret(value)
        return value

    def describe(self) -> str:
        return f"${self.env}" if self.env is not None else f"file {self.file}"


class BasicAuth(Model):
    username: str = Field(min_length=1)
    password: SecretRef  # never inline: from env or file


class TLS(Model):
    ca_file: Path | None = None  # trust these CAs instead of the bundled ones
    cert_file: Path | None = None  # client certificate (mutual TLS)
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TLS:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class Thresholds(Model):
    latency_warning: Duration = 1.5  # runbook 000: API response time > 1.5 s
    latency_critical: Duration = 3.0  # runbook 000: > 3 s
    latency_p95_warning: Duration = 2.0  # runbooks 001 / 004: P95 > 2 s
    latency_p95_critical: Duration = 5.0  # runbook 004: P95 > 5 s
    error_ratio_warning: Ratio = 0.01  # runbooks 001 / 004: error rate > 1 %
    error_ratio_critical: Ratio = 0.05  # runbook 004: > 5 %
    consecutive_failures: int = Field(3, ge=1)  # runbook 004: 3 consecutive failures
    downtime_warning: Duration = 60.0  # runbook 004: service downtime > 1 min
    downtime_critical: Duration = 300.0  # runbook 004: > 5 min
    tls_expiry_warning: Duration = 14 * DAY  # ours: two weeks to renew
    tls_expiry_critical: Duration = 3 * DAY  # ours: a long weekend
    # what the app reports itself (metrics with a `meaning`, probes/appmetrics.py)
    app_error_ratio_warning: Ratio = 0.01  # runbooks 001 / 004: error rate > 1 %
    app_error_ratio_critical: Ratio = 0.05  # runbook 004: > 5 % (000's 3 % / 10 %: per app)
    app_latency_p95_warning: Duration = 2.0  # runbooks 001 / 004: P95 > 2000 ms
    app_latency_p95_critical: Duration = 5.0  # runbook 004: > 5000 ms
    app_latency_average_warning: Duration = 1.0  # runbook 004: average > 1000 ms
    app_latency_average_critical: Duration = 2.0  # runbook 004: > 2000 ms
    app_memory_ratio_warning: Ratio = 0.75  # runbook 004: memory > 75 % (000's 80 %: host)
    app_memory_ratio_critical: Ratio = 0.90  # runbook 004: > 90 % (000's 95 %: host)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        ordered_pair(self, "latency_warning", "latency_critical")
        ordered_pair(self, "latency_p95_warning", "latency_p95_critical")
        ordered_pair(self, "error_ratio_warning", "error_ratio_critical")
        ordered_pair(self, "downtime_warning", "downtime_critical")
        for kind in ("error_ratio", "latency_p95", "latency_average", "memory_ratio"):
            ordered_pair(self, f"app_{kind}_warning", f"app_{kind}_critical")
        # less time left is worse: the critical expiry threshold is the smaller one
        ordered_pair(self, "tls_expiry_critical", "tls_expiry_warning")
        return self


class Assertion(Model):
    """`path` (JMESPath) must equal a value, be one of a list, or lie within [min, max]."""

    path: JMESPath
    equals: Any = None
    in_: list[Any] | None = Field(None, alias="in", min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Assertion:
        kinds = [
            "equals" in self.model_fields_set,
            self.in_ is not None,
            self.min is not None or self.max is not None,
        ]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of equals, in, or min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must not be above max ({self.max:g})")
        return self

    @property
    def kind(self) -> Literal["equals", "in", "range"]:
        """Which check this is (exactly one, see _one_kind)."""
        if "equals" in self.model_fields_set:
            return "equals"
        if self.in_ is not None:
            return "in"
        return "range"

    def describe(self) -> str:
        if self.kind == "equals":
            return f"{self.path} == {self.equals!r}"
        if self.kind == "in":
            return f"{self.path} in {self.in_!r}"
        low = "" if self.min is None else f"{self.min:g} <= "
        high = "" if self.max is None else f" <= {self.max:g}"
        return f"{low}{self.path}{high}"


class Components(Model):
    """Per-component status: `path` selects an object of components (or a list of objects
    with a `name_field`); each component's status is `status` inside it, or the value itself."""

    path: JMESPath = "checks"
    status: JMESPath | None = "status"
    name_field: str = "name"  # when `path` selects a list
    up: list[str | bool | int] = ["up", "ok", "healthy", "pass", "passed", "connected", True]
    include: list[str] | None = None  # only these components (e.g. top-level keys)
    max: int = Field(20, ge=1, le=100)  # bounded label set


class Pool(Model):
    """The app's own connection pool, from its health JSON.

    `path` selects the pool object; field paths are relative to it. A preset fills the
    fields for a known shape; explicit field paths override or complete it.
    """

    preset: Literal["sqlalchemy", "node_postgres"] | None = None
    path: JMESPath = "pool"
    size: JMESPath | None = None
    in_use: JMESPath | None = None
    idle: JMESPath | None = None
    waiting: JMESPath | None = None
    overflow: JMESPath | None = None
    max_overflow: JMESPath | None = None
    total: JMESPath | None = None  # connections open; in_use = total - idle when not given

    @model_validator(mode="after")
    def _something(self) -> Pool:
        if self.preset is None and all(getattr(self, f) is None for f in POOL_FIELDS):
            raise ValueError("give a preset (sqlalchemy, node_postgres) or field paths")
        return self


def _unit_problem(name: str) -> str | None:
    for part in name.split("_"):
        if part in _ABBREVIATED_UNITS:
            return f"spell the unit out: {part!r} is an abbreviation"
        if part in _NON_BASE_UNITS:
            return f"use the base unit {_NON_BASE_UNITS[part]} instead of {part}"
        for prefix in _UNIT_PREFIXES:
            unit = part.removeprefix(prefix)
            if unit != part and (unit in _BASE_UNITS or unit in _NON_BASE_UNITS):
                base = _NON_BASE_UNITS.get(unit, unit)
                return f"use the base unit {base} instead of {part} (and scale, e.g. 0.001)"
    return None


def _app_metric_name(name: str) -> str:
    if not METRIC_NAME_RE.match(name):
        raise ValueError(
            "invalid metric name: lower-case letters, digits and underscores (snake_case), "
            "not starting with a digit"
        )
    problem = _unit_problem(name)
    if problem:
        raise ValueError(f"invalid metric name: {problem}")
    if name.startswith(APP_METRIC_PREFIX) or name.startswith("runbook_"):
        raise ValueError(f"give the name without a prefix: {APP_METRIC_PREFIX} is added")
    if name.endswith(_RESERVED_SUFFIXES):
        raise ValueError(f"metric name {name!r} must not end in {', '.join(_RESERVED_SUFFIXES)}")
    if name in _POOL_NAMES:
        raise ValueError(f"metric name {name!r} is taken by the pool gauges")
    if name in MEANING_NAMES:
        raise ValueError(
            f"metric name {name!r} is taken by the series of a `meaning`: "
            "give `meaning` instead, or another name"
        )
    if len(name) > 100:
        raise ValueError("metric name is longer than 100 characters")
    return name


class AppMetric(Model):
    """A number from the endpoint's JSON served as the gauge runbook_app_<name>{app,endpoint},
    and/or, with a `meaning` and its `unit`, normalised to base units under the fixed series
    the shipped rules read (runbook_app_error_ratio, runbook_app_latency_p95_seconds, ...)."""

    name: Annotated[str, AfterValidator(_app_metric_name)] | None = None
    path: JMESPath
    help: str = Field("", max_length=300)
    scale: float = 1.0  # e.g. 0.001 to serve milliseconds as seconds
    meaning: Meaning | None = None
    unit: Unit | None = None

    @model_validator(mode="after")
    def _meaning_and_unit(self) -> AppMetric:
        # every check says what to write instead: a wrong unit would alert 100 or 1000 times
        # too early or too late, so nothing here is guessed
        if self.meaning is None:
            if self.unit is not None:
                raise ValueError(
                    f"unit {self.unit!r} without a meaning: give the meaning "
                    f"({', '.join(MEANING_UNITS)}), or scale for a value of your own"
                )
            if self.name is None:
                raise ValueError("give a name, a meaning (with its unit), or both")
            return self
        units = MEANING_UNITS[self.meaning]
        fits = " or ".join(units)
        if self.unit is None:
            raise ValueError(
                f"meaning {self.meaning} needs a unit: {fits} "
                f"({self._unit_example()}): the value alone is ambiguous"
            )
        if self.unit not in units:
            raise ValueError(f"unit {self.unit!r} does not fit meaning {self.meaning}: use {fits}")
        if "scale" in self.model_fields_set:
            raise ValueError(
                f"give unit or scale, not both: unit {self.unit!r} already converts "
                f"{self.meaning} to base units"
            )
        return self

    def _unit_example(self) -> str:
        if self.meaning in ("error_ratio", "memory_ratio"):
            return "ratio: 0.06 is 6 %; percent: 6 is 6 %"
        return "seconds: 2.5; milliseconds: 2500"

    @property
    def factor(self) -> float:
        """What a JSON value is multiplied by: the unit's conversion to base units, or scale."""
        if self.meaning is not None and self.unit is not None:
            return MEANING_UNITS[self.meaning][self.unit]
        return self.scale

    @property
    def full_name(self) -> str | None:
        return None if self.name is None else APP_METRIC_PREFIX + self.name

    def describe(self) -> str:
        """For --check-config: `runbook_app_<name>`, `<meaning> (<unit>)`, or both."""
        meaning = f"{self.meaning} ({self.unit})" if self.meaning else None
        return " + ".join(x for x in (self.full_name, meaning) if x)

    @property
    def help_text(self) -> str:
        if self.help:
            return self.help
        return f"{self.path} of the endpoint's JSON" + (
            f", times {self.factor:g}." if self.factor != 1 else "."
        )


Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
StatusCode = Annotated[int, Field(ge=100, le=599)]


class EndpointSettings(Model):
    """Everything an app's `defaults` may set for its endpoints."""

    method: Method = "GET"
    headers: dict[str, str | SecretRef] = {}
    basic_auth: BasicAuth | None = None
    interval: Duration = 60.0  # runbook 004: probe every 60 s; at least MIN_PROBE_INTERVAL
    timeout: Duration | None = None  # None: 10 s, or the interval when shorter
    expected_status: list[StatusCode] = Field([200], min_length=1)
    tls: TLS = TLS()
    follow_redirects: bool = False
    max_redirects: int = Field(10, ge=0, le=50)
    max_body_size: ByteSize = MiB
    thresholds: Thresholds = Thresholds()
    slo_objective: float = Field(0.999, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> EndpointSettings:
        for name, value in self.headers.items():
            # the message names the header, never its value
            if not _HEADER_NAME_RE.match(name):
                raise ValueError(f"headers: invalid header name {name!r}")
            if isinstance(value, str) and any(c in value for c in "\r\n\x00"):
                raise ValueError(f"headers: the value of {name} contains a line break or NUL")
        with FieldError.at("interval"):
            at_least("interval", self.interval, MIN_PROBE_INTERVAL, "a shorter one floods the app")
        with FieldError.at("timeout"):
            if self.timeout is not None:
                at_least("timeout", self.timeout, 0.001, "no request answers that fast")
        if self.timeout is not None and self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must not exceed interval ({self.interval:g}s)"
            )
        return self

    @property
    def probe_timeout(self) -> float:
        return self.timeout if self.timeout is not None else min(10.0, self.interval)


class Endpoint(EndpointSettings):
    name: LabelValue
    url: str = Field(min_length=1, max_length=2000)
    assertions: list[Assertion] = Field([], max_length=50)
    components: Components | None = None
    pool: Pool | None = None
    metrics: list[AppMetric] = Field([], max_length=100)

    @model_validator(mode="after")
    def _endpoint(self) -> Endpoint:
        # checked here, not in a field validator, so an error never echoes the URL
        try:
            url = httpx.URL(self.url)
        except Exception:
            raise ValueError("url: not a valid URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("url: must be an absolute http:// or https:// URL")
        if url.userinfo:
            raise ValueError("url: put credentials in basic_auth or headers, not in the URL")
        require_unique(
            [m.name for m in self.metrics if m.name],
            "metrics: names must be unique within an endpoint",
        )
        require_unique(
            [m.meaning for m in self.metrics if m.meaning],
            "metrics: each meaning at most once per endpoint (one series each)",
        )
        return self

    def describe(self) -> str:
        """One line for --check-config; never a header value or password."""
        parts = [
            f"{self.method} {safe_url(self.url)}",  # no query string: it may hold a token
            f"every {self.interval:g}s, timeout {self.probe_timeout:g}s",
            f"expect {'/'.join(map(str, self.expected_status))}",
        ]
        if self.headers or self.basic_auth:
            names = sorted(self.headers) + (["basic_auth"] if self.basic_auth else [])
            parts.append(f"auth/headers: {', '.join(names)}")
        if self.assertions:
            parts.append(f"{len(self.assertions)} assertion(s)")
        if self.components:
            parts.append(f"components at {self.components.path}")
        if self.pool:
            parts.append(f"pool {self.pool.preset or 'paths'} at {self.pool.path}")
        if self.metrics:
            parts.append("metrics " + ", ".join(m.describe() for m in self.metrics))
        th = self.thresholds
        parts.append(
            f"latency warning > {th.latency_warning:g}s, critical > {th.latency_critical:g}s"
        )
        return "; ".join(parts)

    @property
    def needs_json(self) -> bool:
        return bool(self.assertions or self.components or self.pool or self.metrics)

    def register_inline_secrets(self) -> None:
        for name, value in self.headers.items():
            # inline values of secret-looking headers are secrets too (redacted everywhere)
            if isinstance(value, str) and looks_secret(name):
                register_secret(value)


_MERGED = ("headers", "tls", "thresholds")  # merged key by key; other keys are replaced


def _inherit(defaults: dict, endpoint: dict) -> dict:
    out = dict(defaults)
    for key, value in endpoint.items():
        if key in _MERGED and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


class App(Model):
    name: LabelValue
    defaults: EndpointSettings = EndpointSettings()
    endpoints: list[Endpoint] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        defaults, endpoints = data.get("defaults"), data.get("endpoints")
        if not isinstance(defaults, dict) or not isinstance(endpoints, list):
            return data
        try:
            EndpointSettings.model_validate(defaults)
        except ValidationError:
            return data  # reported once, under defaults, rather than once per endpoint
        merged = [_inherit(defaults, e) if isinstance(e, dict) else e for e in endpoints]
        return {**data, "endpoints": merged}

    @model_validator(mode="after")
    def _unique(self) -> App:
        require_unique(
            [e.name for e in self.endpoints], "endpoint names must be unique within an app"
        )
        for e in self.endpoints:
            e.register_inline_secrets()
        return self
