"""The fast layer's pure pieces, called directly: no database, no server, no exporter.

Each of these used to be reached only through a running exporter and a scrape; here a wrong
bucket, message or classification shows up in milliseconds, with the input that caused it.
"""

from __future__ import annotations

import ssl

import httpx
import pytest

from exporter.collectors.connections import OTHER, state_label, top_n
from exporter.collectors.queues import Column, TableInfo, queue_problems
from exporter.collectors.tables import dead_ratio
from exporter.config import Queue
from exporter.probes.config import Assertion, Components
from exporter.probes.healthjson import Checker, ComponentReader, JSONFailure, nesting_depth, parse
from exporter.probes.http import classify

# --- connections ---------------------------------------------------------------------------


def test_state_labels_are_metric_safe():
    assert state_label("idle in transaction (aborted)") == "idle_in_transaction_aborted"
    assert state_label("fastpath function call") == "fastpath_function_call"
    assert state_label("active") == "active"


def test_top_n_keeps_the_largest_sums_the_rest_and_always_serves_other():
    counts = {"web": 9, "worker": 5, "cron": 5, "": 2, "psql": 1}
    assert top_n(counts, 2, "(none)") == {OTHER: 5 + 2 + 1, "web": 9, "cron": 5}
    # ties broken by name so the kept set does not flap between runs
    assert top_n({"b": 1, "a": 1}, 1, "-") == {OTHER: 1, "a": 1}
    assert top_n({}, 5, "-") == {OTHER: 0}
    # a real value named "other" is added to the bucket, not served twice
    assert top_n({OTHER: 3, "x": 1}, 0, "-") == {OTHER: 4}
    assert top_n({"": 4}, 5, "(none)") == {OTHER: 0, "(none)": 4}


def test_dead_ratio():
    assert dead_ratio(0, 0) == 0.0
    assert dead_ratio(80, 20) == pytest.approx(0.2)
    assert dead_ratio(0, 5) == 1.0


# --- queues ----------------------------------------------------------------------------------

TEXT = Column("text", "S", True, None)
TS = Column("timestamp with time zone", "D", True, None)
INT = Column("integer", "N", True, None)


def jobs_table(**override: Column | None) -> TableInfo:
    columns = {"status": TEXT, "created_at": TS, "updated_at": TS, "retry_count": INT}
    columns.update(override)
    return TableInfo("r", True, {k: v for k, v in columns.items() if v is not None})


def test_a_well_formed_queue_table_has_no_problems():
    q = Queue(table="public.processing_jobs")
    assert queue_problems("targets[0].queues[0]", q, jobs_table(), None) == []


def test_queue_problems_name_the_config_path_and_what_is_wrong():
    q = Queue(table="jobs", dead_letter_table="dlq")
    path = "targets[0].queues[1]"
    problems = queue_problems(
        path,
        q,
        jobs_table(
            updated_at=None,
            created_at=Column("date", "D", True, None),
            retry_count=Column("integer", "N", False, None),
        ),
        None,
    )
    assert f'{path}.updated_at_column: column "updated_at" does not exist' in problems[1]
    assert "created_at_column" in problems[0] and "has type date" in problems[0]
    assert "permission denied" in problems[2] and "retry_count" in problems[2]
    assert problems[3].startswith(f"{path}.dead_letter_table")
    assert len(problems) == 4
    missing = queue_problems(path, q, None, None)
    assert missing[0].startswith(f"{path}.table") and "public.jobs" in missing[0]


def test_an_enum_status_without_a_configured_value_is_named():
    q = Queue(table="jobs", statuses={"pending": ["queued"], "completed": ["done"]})
    enum = Column("job_state", "E", True, ("queued", "running", "done", "failed"))
    problems = queue_problems("q", q, jobs_table(status=enum), None)
    # 'processing' and 'failed' defaults: 'processing' is not a label of job_state
    assert problems == [
        "q.statuses.processing: 'processing' is not a value of the enum type job_state of "
        'column "status"'
    ]


# --- probes: classification and health JSON -------------------------------------------------


def test_classify_tells_timeouts_tls_and_connection_failures_apart():
    assert classify(httpx.ReadTimeout("slow")).reason == "timeout"
    assert classify(TimeoutError()).reason == "timeout"
    tls = httpx.ConnectError("handshake")
    tls.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    assert classify(tls).reason == "tls"
    assert classify(httpx.ConnectError("refused")).reason == "connect"
    assert classify(httpx.RemoteProtocolError("reset")).reason == "connect"


def test_classify_survives_an_exception_cycle():
    a, b = httpx.ConnectError("a"), httpx.ConnectError("b")
    a.__cause__, b.__context__ = b, a
    assert classify(a).reason == "connect"


def test_nesting_depth_ignores_brackets_in_strings():
    assert nesting_depth('{"a": [1, {"b": "[[[["}]}') == 3
    assert nesting_depth('"\\"[" ') == 0
    assert nesting_depth("[" * 70 + "]" * 70) == 70


def test_parse_refuses_empty_invalid_and_too_deep_documents():
    assert parse(b'{"status": "ok"}') == {"status": "ok"}
    for body in (b"", b"{", b"[" * 1000 + b"]" * 1000):
        with pytest.raises(JSONFailure):
            parse(body)


def test_checker_reports_each_failed_assertion_readably():
    checker = Checker(
        [
            Assertion(path="status", equals="ok"),
            Assertion(path="db.latency_ms", max=100),
            Assertion.model_validate({"path": "version", "in": ["1", "2"]}),
            Assertion(path="missing", min=0),
        ]
    )
    doc = {"status": "degraded", "db": {"latency_ms": "250"}, "version": "3"}
    assert checker.failures(doc) == [
        "status == 'ok': got \"degraded\"",
        "db.latency_ms <= 100: got 250",
        "version in ['1', '2']: got \"3\"",
        "0 <= missing: missing is missing",
    ]
    assert checker.failures({"status": "ok", "db": {"latency_ms": 5}, "version": "2"}) == [
        "0 <= missing: missing is missing"
    ]


def test_components_from_an_object_or_a_list_bounded_and_case_blind():
    reader = ComponentReader(Components(path="checks", max=2))
    doc = {"checks": {"redis": {"status": "UP"}, "db": {"status": "down"}, "zz": "ok"}}
    assert reader.read(doc) == {"db": 0.0, "redis": 1.0}  # sorted, the first max kept
    listed = ComponentReader(Components(path="services", status="state"))
    doc = {"services": [{"name": "api", "state": "healthy"}, {"name": "q", "state": False}, {}]}
    assert listed.read(doc) == {"api": 1.0, "q": 0.0}
