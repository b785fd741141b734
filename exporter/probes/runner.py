"""Probe jobs: one scheduler Job per endpoint, each with its own Prober holding the state that
must survive between runs (counters, histogram, consecutive failures, last success).

A probe failure is a result, not an error: probe() returns runbook_probe_success 0 and the
reason, and never raises. An exception while judging the response (a JMESPath expression that
does not fit the document, a bug) is the failure reason check_error, logged, with every series
of the endpoint still served. The Job's timeout sits above the probe's own as a safety net.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from exporter.metrics import spec
from exporter.probes.appmetrics import AppMetricsReader
from exporter.probes.config import App, Endpoint
from exporter.probes.healthjson import Checker, ComponentReader, JSONFailure, parse
from exporter.probes.http import PHASES, REASONS, Clients, HTTPResult, ProbeFailure, fetch
from exporter.probes.pool import PoolReader
from exporter.scheduler import Job
from exporter.secrets import redact
from exporter.sources import ProbeKind

log = logging.getLogger("exporter.probes")
SRC = "probes/runner.py"
AE = ("app", "endpoint")
BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)  # include the runbooks' thresholds
JOB_TIMEOUT_MARGIN = 2.0  # seconds above the probe timeout before the scheduler steps in

SUCCESS = spec(
    "runbook_probe_success",
    "gauge",
    "1 when the last probe of the endpoint succeeded (status expected, body within the cap, "
    "JSON and assertions passing), else 0.",
    AE,
    SRC,
)
FAILURE_REASON = spec(
    "runbook_probe_failure_reason",
    "gauge",
    "1 for the reason the last probe failed, 0 for the other reasons of the fixed set "
    "(connect, timeout, tls, status, body_too_large, encoding, json, assertion, check_error); "
    "all 0 on success or when the request could not be built (a secret could not be read, see "
    "the log).",
    ("app", "endpoint", "reason"),
    SRC,
)
STATUS_CODE = spec(
    "runbook_probe_status_code",
    "gauge",
    "HTTP status of the last probe's final response; 0 when no response arrived.",
    AE,
    SRC,
)
DURATION = spec(
    "runbook_probe_duration_seconds",
    "gauge",
    "How long the last probe took, request to the end of the body.",
    AE,
    SRC,
)
REQUEST_DURATION = spec(
    "runbook_probe_request_duration_seconds",
    "histogram",
    "Probe durations: every probe that got a response, and timeouts at the time they gave up.",
    AE,
    SRC,
)
PHASE = spec(
    "runbook_probe_phase_duration_seconds",
    "gauge",
    "Phases of the last probe: connect, tls, first_byte (request sent to response headers), "
    "body; summed over redirects; a phase that did not happen is absent.",
    ("app", "endpoint", "phase"),
    SRC,
)
CONSECUTIVE = spec(
    "runbook_probe_consecutive_failures",
    "gauge",
    "Failed probes in a row; 0 after a success.",
    AE,
    SRC,
)
LAST_SUCCESS = spec(
    "runbook_probe_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful probe; absent until the first one.",
    AE,
    SRC,
)
CERT_EXPIRY = spec(
    "runbook_probe_tls_cert_expiry_timestamp_seconds",
    "gauge",
    "Unix time the endpoint's TLS certificate expires, from the last probe that completed a "
    "TLS handshake.",
    AE,
    SRC,
)
REQUESTS = spec("runbook_probe_requests", "counter", "Probes of the endpoint.", AE, SRC)
FAILURES = spec("runbook_probe_failures", "counter", "Failed probes of the endpoint.", AE, SRC)


def jitter(app: str, endpoint: str, interval: float) -> float:
    """A stable offset within the interval, so many endpoints do not all fire at once."""
    return zlib.crc32(f"{app}/{endpoint}".encode()) / 2**32 * interval


class Prober:
    def __init__(self, app: App, ep: Endpoint, clients: Clients) -> None:
        self.app, self.ep, self.clients = app.name, ep, clients
        self.labels = [app.name, ep.name]
        self.checker = Checker(ep.assertions)
        self.readers: list[tuple[str, Any]] = []  # (what, reader with .families(doc, ...))
        if ep.components:
            self.readers.append(("reading the components", ComponentReader(ep.components)))
        if ep.pool:
            self.readers.append(("reading the pool", PoolReader(ep.pool)))
        if ep.metrics:
            self.readers.append(("reading the app metrics", AppMetricsReader(ep.metrics)))
        self.requests = 0
        self.failures = 0
        self.consecutive = 0
        self.bucket_counts = [0] * len(BUCKETS)  # cumulative: observations <= each bound
        self.observed = 0
        self.observed_sum = 0.0
        self.last_success: float | None = None
        self.cert_expiry: float | None = None
        self.last_reason: str | None = "never"  # for logging state changes only

    async def probe(self) -> list[Metric]:
        try:
            res = await fetch(self.ep, self.clients)
        except Exception as e:  # fetch turns probe failures into results; this is a bug
            res = HTTPResult(failure=_check_error("fetching", e))
        readings, failure = self._judge(res)
        self._account(res, failure)
        return self._families(res, readings, failure)

    def failed_run(self, error: str) -> list[Metric]:
        """The job's run raised or was cut by the scheduler (a safety net: probe() bounds and
        judges itself): counted and served as a failed probe, every series of the endpoint
        kept, instead of the series vanishing."""
        reason = "timeout" if error.startswith("timed out") else "check_error"
        res = HTTPResult(failure=ProbeFailure(reason, error))
        self._account(res, res.failure)
        return self._families(res, [], res.failure)

    def _judge(self, res: HTTPResult) -> tuple[list[Metric], ProbeFailure | None]:
        """The probe's outcome, first failure wins: transport, status, size, encoding, JSON,
        assertion; an exception while judging wins over all but transport (check_error).
        Returns the readings (components, pool, app metrics) too."""
        failure = res.failure
        status_ok = res.status in self.ep.expected_status  # set whenever res.responded
        if res.responded and not status_ok and (failure is None or failure.reason != "timeout"):
            failure = ProbeFailure("status", f"status {res.status} is not expected")
        if res.body is None or (failure is not None and failure.reason != "status"):
            return [], failure
        step = "parsing the body"
        try:
            try:
                doc = parse(res.body)
            except JSONFailure as e:
                return [], failure or ProbeFailure("json", str(e))
            if failure is None:
                step = "checking the assertions"
                problems = self.checker.failures(doc)
                if problems:
                    failure = ProbeFailure("assertion", "; ".join(problems))
            # read even from a failed probe's body: a 503 health document says what is down
            readings: list[Metric] = []
            for what, reader in self.readers:
                step = what
                readings += reader.families(doc, *self.labels)
        except Exception as e:  # RecursionError, a JMESPath type error: judged as failed
            return [], _check_error(step, e)
        return readings, failure

    def _account(self, res: HTTPResult, failure: ProbeFailure | None) -> None:
        self.requests += 1
        if res.cert_expiry is not None:
            self.cert_expiry = res.cert_expiry
        # a refused connection says nothing about latency; a timeout is as slow as it got
        if res.responded or (failure is not None and failure.reason == "timeout"):
            self.observed += 1
            self.observed_sum += res.duration
            for i, le in enumerate(BUCKETS):
                if res.duration <= le:
                    self.bucket_counts[i] += 1
        if failure is None:
            self.consecutive = 0
            self.last_success = time.time()
            if self.last_reason is not None:
                if self.last_reason != "never":
                    log.info("probe recovered", extra={"app": self.app, "endpoint": self.ep.name})
                self.last_reason = None
            return
        self.failures += 1
        self.consecutive += 1
        reason = failure.reason or "request"
        if reason != self.last_reason:
            log.warning(
                "probe failed",
                extra={
                    "app": self.app,
                    "endpoint": self.ep.name,
                    "reason": reason,
                    "error": redact(failure.detail),
                },
            )
            self.last_reason = reason

    def _families(
        self, res: HTTPResult, readings: list[Metric], failure: ProbeFailure | None
    ) -> list[Metric]:
        labels = self.labels
        fams = [
            SUCCESS.one(0 if failure else 1, *labels),
            STATUS_CODE.one(res.status or 0, *labels),
            DURATION.one(res.duration, *labels),
            CONSECUTIVE.one(self.consecutive, *labels),
            REQUESTS.one(self.requests, *labels),
            FAILURES.one(self.failures, *labels),
        ]
        reason = FAILURE_REASON.family()
        for r in REASONS:
            reason.add_metric([*labels, r], 1 if failure and failure.reason == r else 0)
        fams.append(reason)
        phases = PHASE.family()
        for p in PHASES:
            if p in res.phases:
                phases.add_metric([*labels, p], res.phases[p])
        if phases.samples:
            fams.append(phases)
        hist = REQUEST_DURATION.family()
        buckets = [
            (floatToGoString(le), n) for le, n in zip(BUCKETS, self.bucket_counts, strict=True)
        ]
        buckets.append(("+Inf", self.observed))
        hist.add_metric(labels, buckets, self.observed_sum)
        fams.append(hist)
        if self.last_success is not None:
            fams.append(LAST_SUCCESS.one(self.last_success, *labels))
        if self.cert_expiry is not None:
            fams.append(CERT_EXPIRY.one(self.cert_expiry, *labels))
        return fams + readings


def _check_error(step: str, exc: BaseException) -> ProbeFailure:
    text = redact(f"{type(exc).__name__}: {exc}")
    return ProbeFailure("check_error", f"{step}: {text[:300]}")


def probe_jobs(apps: list[App], clients: Clients) -> list[Job]:
    """One job per endpoint; `clients` is shared by every endpoint, its owner closes it."""
    jobs = []
    for app in apps:
        for ep in app.endpoints:
            # build SSL contexts now, off the event loop; a bad file is reported by the probe
            with contextlib.suppress(Exception):
                clients.get(ep.tls)
            prober = Prober(app, ep, clients)
            jobs.append(
                Job(
                    key=(app.name, ep.name),
                    interval=ep.interval,
                    timeout=ep.probe_timeout + JOB_TIMEOUT_MARGIN,
                    run=prober.probe,
                    first_delay=jitter(app.name, ep.name, ep.interval),
                    self_metrics=False,
                    on_error=prober.failed_run,
                )
            )
    return jobs


class HTTPProbe(ProbeKind):
    """Probes of the apps' HTTP endpoints (apps[].endpoints): the only probe kind so far.
    Its jobs come from `probe_jobs`; the registry knows it for its metrics and their docs."""

    name = "http"
    spec_sources = (SRC, "probes/healthjson.py", "probes/pool.py", "probes/appmetrics.py")
