"""The background loop: own interval and timeout per job, no overlap, failures isolated."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import time

from prometheus_client.core import GaugeMetricFamily

from exporter.logs import JsonFormatter, LogfmtFormatter
from exporter.scheduler import Job, PartialFailure, Scheduler, Store
from exporter.secrets import register_secret


def run_for(scheduler: Scheduler, seconds: float) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await scheduler.run(stop)

    asyncio.run(main())


def test_jobs_never_overlap_and_overruns_skip_ticks():
    running, peak, starts = 0, 0, []

    async def slow() -> list:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        starts.append(time.monotonic())
        await asyncio.sleep(0.25)  # longer than the 0.1 s interval
        running -= 1
        return []

    s = Scheduler(Store())
    s.add(Job(("t", "slow"), interval=0.1, timeout=1, run=slow))
    run_for(s, 1.1)
    assert peak == 1
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps and min(gaps) >= 0.25  # the next run waits for the previous one
    assert len(starts) <= 5  # missed ticks are skipped, not run in a burst


def test_partial_failure_keeps_the_parts_that_worked_and_counts_as_failed():
    fam = GaugeMetricFamily("runbook_queue_up", "q", labels=["queue"])
    fam.add_metric(["good"], 1)
    fam.add_metric(["bad"], 0)

    async def half() -> list:
        raise PartialFailure("queues[1].table: table missing", [fam])

    store = Store()
    asyncio.run(Scheduler(store).run_once(Job(("t", "queues"), 1, 1, half)))
    st = store.states[("t", "queues")]
    assert st.last is not None and not st.last.success
    assert st.last.families == [fam]
    assert st.last.error == "queues[1].table: table missing"
    assert (st.errors_total, st.last_success_at) == (1, None)


def test_timeout_and_failure_are_recorded_and_isolated():
    fast_runs = 0

    async def hang() -> list:
        await asyncio.sleep(10)
        return []

    async def boom() -> list:
        raise RuntimeError("query failed")

    async def fast() -> list:
        nonlocal fast_runs
        fast_runs += 1
        fam = GaugeMetricFamily("runbook_x", "x", labels=["target"])
        fam.add_metric(["t"], 1)
        return [fam]

    store = Store()
    s = Scheduler(store)
    s.add(Job(("t", "hang"), interval=0.2, timeout=0.1, run=hang))
    s.add(Job(("t", "boom"), interval=0.2, timeout=1, run=boom))
    s.add(Job(("t", "fast"), interval=0.1, timeout=1, run=fast))
    run_for(s, 1.0)
    snap = store.snapshot()
    assert snap[("t", "hang")].last.error == "timed out after 0.1s"
    assert snap[("t", "boom")].last.error == "RuntimeError: query failed"
    assert not snap[("t", "boom")].last.success and snap[("t", "boom")].last.families == []
    assert snap[("t", "boom")].errors_total == snap[("t", "boom")].runs_total >= 3
    assert snap[("t", "fast")].last.success and fast_runs >= 8  # undisturbed by the others


def test_log_lines_redact_registered_secrets():
    register_secret("hunter2-pw")
    rec = logging.LogRecord("exporter", logging.WARNING, "", 0, "login as x:hunter2-pw", (), None)
    rec.dsn = "postgresql://x:hunter2-pw@db/app"
    line = LogfmtFormatter().format(rec)
    assert "hunter2-pw" not in line and "<redacted>" in line
    data = json.loads(JsonFormatter().format(rec))
    assert "hunter2-pw" not in json.dumps(data) and data["level"] == "warning"


# --- supervision: a job whose loop dies comes back, counted as failed and logged ----------


def gauge(name: str, value: float) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, "x")
    fam.add_metric([], value)
    return fam


def test_a_loop_killed_by_the_store_is_restarted_counted_and_logged(caplog):
    caplog.set_level(logging.WARNING, logger="exporter.scheduler")
    store = Store()
    real_put, calls = store.put, 0

    def put_failing_once(key, result):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("store broke")
        real_put(key, result)

    store.put = put_failing_once
    runs = 0

    async def ok() -> list:
        nonlocal runs
        runs += 1
        return [gauge("runbook_x", 1)]

    s = Scheduler(store, restart_backoff=0.05)
    s.add(Job(("t", "db"), interval=0.1, timeout=1, run=ok))
    run_for(s, 0.6)
    st = store.snapshot()[("t", "db")]
    # the death is stored as a failed run, then the restarted loop goes on succeeding
    assert st.errors_total == 1 and st.runs_total >= 3 and runs >= 3
    assert st.last.success
    died = [r for r in caplog.records if r.getMessage() == "collector job died; restarting"]
    assert len(died) == 1
    assert died[0].error == "job loop died: RuntimeError: store broke"
    assert died[0].at.rsplit(":", 1)[0].endswith("test_scheduler.py")  # where it was raised


class Escaped(BaseException):
    """Not an Exception, so run_once does not catch it: only the supervisor does."""


def test_a_run_raising_past_run_once_is_restarted_with_backoff_and_served_as_failed(caplog):
    caplog.set_level(logging.WARNING, logger="exporter.scheduler")
    store, starts = Store(), []

    async def escapes() -> list:
        starts.append(time.monotonic())
        raise Escaped("beyond Exception")

    s = Scheduler(store, restart_backoff=0.05)
    job = Job(("web", "home"), 0.05, 1, escapes, self_metrics=False)
    job.on_error = lambda error: [gauge("runbook_probe_success", 0)]
    s.add(job)
    run_for(s, 0.5)
    st = store.snapshot()[("web", "home")]
    assert st.errors_total == st.runs_total == len(starts) >= 2
    assert st.last.error == "job loop died: Escaped: beyond Exception"
    assert [f.samples[0].value for f in st.last.families] == [0]  # success 0, not vanished
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(b >= a * 1.5 for a, b in itertools.pairwise(gaps))  # the backoff doubles
    assert len(starts) <= 5  # 0.05 + 0.1 + 0.2 + ... within 0.5 s: no hot restart loop
    assert any(r.getMessage() == "probe job died; restarting" for r in caplog.records)


def test_unusable_intervals_are_clamped_instead_of_killing_or_freezing_the_job(caplog):
    caplog.set_level(logging.WARNING, logger="exporter.scheduler")
    store = Store()
    s = Scheduler(store, restart_backoff=0.05)
    for name, interval in (("zero", 0.0), ("negative", -1.0), ("nan", math.nan), ("inf", math.inf)):
        s.add(Job(("t", name), interval=interval, timeout=math.inf, run=lambda: _empty()))
    run_for(s, 0.3)
    snap = store.snapshot()
    for name in ("zero", "negative", "nan", "inf"):
        st = snap[("t", name)]
        assert st.runs_total == 1 and st.errors_total == 0, name  # ran, did not die or spin
    clamped = [r for r in caplog.records if "clamped" in r.getMessage()]
    assert {r.job[1] for r in clamped} == {"zero", "negative", "nan", "inf"}
    assert not [r for r in caplog.records if "died" in r.getMessage()]


async def _empty() -> list:
    return []


def test_probe_job_failures_are_logged_once_per_state_change(caplog):
    caplog.set_level(logging.INFO, logger="exporter.scheduler")
    fail = True

    async def judge() -> list:
        if fail:
            raise RecursionError("maximum recursion depth exceeded")
        return [gauge("runbook_probe_success", 1)]

    store = Store()
    s = Scheduler(store)
    job = Job(("web", "health"), 0.05, 1, judge, self_metrics=False)
    job.on_error = lambda error: [gauge("runbook_probe_success", 0)]
    s.add(job)

    async def main() -> None:
        nonlocal fail
        stop = asyncio.Event()
        task = asyncio.create_task(s.run(stop))
        await asyncio.sleep(0.3)
        fail = False
        await asyncio.sleep(0.2)
        stop.set()
        await task

    asyncio.run(main())
    msgs = [(r.getMessage(), getattr(r, "error", None)) for r in caplog.records]
    assert msgs.count(("probe failed", "RecursionError: maximum recursion depth exceeded")) == 1
    assert msgs.count(("probe recovered", None)) == 1
    st = store.snapshot()[("web", "health")]
    assert st.errors_total >= 3 and st.last.success


# --- readiness and first runs --------------------------------------------------------------


def test_first_runs_happen_early_and_later_runs_keep_their_jittered_phase():
    starts: dict[str, list[float]] = {"a": [], "b": []}

    def recorder(name: str):
        async def run() -> list:
            starts[name].append(time.monotonic())
            return []

        return run

    s = Scheduler(Store(), first_run_within=0.2)
    # interval 1 s, jitter 0.6 s and 0.9 s: first runs squeezed into 0.2 s, then the phase
    s.add(Job(("w", "a"), 1.0, 1.0, recorder("a"), first_delay=0.6))
    s.add(Job(("w", "b"), 1.0, 1.0, recorder("b"), first_delay=0.9))
    t0 = time.monotonic()
    run_for(s, 2.05)
    for name, phase in (("a", 0.6), ("b", 0.9)):
        first, second, third = (t - t0 for t in starts[name][:3])
        assert first < 0.2 + 0.05, (name, first)
        assert abs(second - phase) < 0.08 and abs(third - (phase + 1)) < 0.08, (name, second)


def test_ready_once_every_job_ran_or_its_first_timeout_passed():
    async def hang() -> list:
        await asyncio.sleep(30)
        return []

    s = Scheduler(Store(), first_run_within=0.1)
    s.add(Job(("t", "quick"), 60, 5, _empty, first_delay=55))  # jittered far into its interval
    s.add(Job(("t", "hung"), 60, 0.3, hang))  # never finishes its run: ready at its timeout
    seen: list[tuple[float, bool]] = []

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(s.run(stop))
        t0 = time.monotonic()
        assert not s.ready()
        while time.monotonic() - t0 < 0.6:  # bounded
            seen.append((time.monotonic() - t0, s.ready()))
            await asyncio.sleep(0.02)
        stop.set()
        await task

    asyncio.run(main())
    became = next(t for t, ok in seen if ok)
    assert 0.25 <= became < 0.45  # the hung job's first timeout, not the 55 s jitter
    assert all(ok for t, ok in seen if t >= became)  # and it stays ready


def test_not_ready_while_jobs_are_started_but_not_yet_running():
    """Readiness is read from the HTTP thread: between the scheduler creating the job tasks and
    those tasks first running, no job has a deadline yet, which must not count as passed."""
    s = Scheduler(Store(), first_run_within=0.1)
    s.add(Job(("t", "a"), 60, 5, _empty))
    s.add(Job(("t", "b"), 60, 5, _empty))

    async def main() -> bool:
        stop = asyncio.Event()
        task = asyncio.create_task(s.run(stop))
        await asyncio.sleep(0)  # run() creates the job tasks; they have not run yet
        seen = s.ready()
        stop.set()
        await task
        return seen

    assert asyncio.run(main()) is False


def test_replace_keeps_unchanged_jobs_and_drops_removed_ones():
    runs: dict[str, int] = {"kept": 0, "removed": 0, "added": 0}

    def counter(name: str):
        async def run() -> list:
            runs[name] += 1
            return []

        return run

    store = Store()
    s = Scheduler(store)
    kept = Job(("t", "kept"), 0.05, 1, counter("kept"))
    s.add(kept)
    s.add(Job(("t", "removed"), 0.05, 1, counter("removed")))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(s.run(stop))
        await asyncio.sleep(0.2)
        kept_task = s._running[("t", "kept")].task
        version = store.version
        await s.replace([kept, Job(("t", "added"), 0.05, 1, counter("added"))])
        assert s._running[("t", "kept")].task is kept_task  # not restarted
        assert store.version > version
        removed_runs = runs["removed"]
        await asyncio.sleep(0.2)
        assert runs["removed"] == removed_runs  # stopped
        stop.set()
        await task

    asyncio.run(main())
    snap = store.snapshot()
    assert ("t", "removed") not in snap
    # history kept across replace (a run finishing as the scheduler stops is not stored)
    assert runs["kept"] - 1 <= snap[("t", "kept")].runs_total <= runs["kept"]
    assert snap[("t", "kept")].runs_total >= 6
    assert snap[("t", "added")].runs_total >= 2


def test_a_run_that_swallows_its_cancellation_is_abandoned_not_waited_for(caplog):
    caplog.set_level(logging.WARNING, logger="exporter.scheduler")
    swallowed = 0

    async def stubborn() -> list:
        nonlocal swallowed
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            swallowed += 1  # and carries on, as a badly written client library might
        await asyncio.sleep(0.3)
        return []

    store = Store()
    s = Scheduler(store, cancel_grace=0.05)
    s.add(Job(("t", "stubborn"), interval=0.1, timeout=0.1, run=stubborn))
    run_for(s, 0.7)
    st = store.snapshot()[("t", "stubborn")]
    # each run: 0.1 s timeout + 0.05 s grace, then the loop moves on
    assert st.runs_total == st.errors_total >= 3 and swallowed >= 3
    assert st.last.error == "timed out after 0.1s"
    assert any("ignored its cancellation" in r.getMessage() for r in caplog.records)


def test_wake_runs_a_job_before_its_next_tick():
    """A reconnect (TargetDB.reconnected) wakes the target's jobs, so fresh data follows the
    database's return at once instead of up to one interval later."""
    starts: list[float] = []

    async def run() -> list:
        starts.append(time.monotonic())
        return []

    async def main() -> None:
        events = [asyncio.Event()]

        async def wake() -> None:  # one-shot, like TargetDB.reconnected
            await events[-1].wait()

        s = Scheduler(Store())
        s.add(Job(("t", "c"), interval=30, timeout=1, run=run, wake=wake))
        stop = asyncio.Event()
        task = asyncio.create_task(s.run(stop))
        await asyncio.sleep(0.3)
        assert len(starts) == 1  # the first run; the next tick is 30 s away
        events.append(asyncio.Event())
        events[-2].set()
        for _ in range(50):  # bounded: 5 s, far below the 30 s tick
            if len(starts) == 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        stop.set()
        await task
        assert len(starts) == 2  # woken once: one more run, long before the tick

    asyncio.run(main())


def run_in_loop_time(main) -> None:
    """Run `main` on an event loop whose clock is fake (looptime): sleeps and timeouts take
    no real time, so minutes of schedule are checked in milliseconds and to the exact tick."""
    import looptime

    loop = looptime.new_event_loop(start=0, noop_cycles=42)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_an_hour_of_schedule_in_loop_time_ticks_timeouts_and_skipped_overruns():
    starts: dict[str, list[float]] = {"steady": [], "slow": [], "hang": []}

    def job(name: str, work: float):
        async def run() -> list:
            starts[name].append(asyncio.get_running_loop().time())
            await asyncio.sleep(work)
            return []

        return run

    store = Store()

    async def main() -> None:
        s = Scheduler(store)
        s.add(Job(("t", "steady"), interval=60, timeout=10, run=job("steady", 2)))
        # a run of 150 s on a 60 s interval: the ticks it overran are skipped, not burst
        s.add(Job(("t", "slow"), interval=60, timeout=200, run=job("slow", 150)))
        # never returns: cut at its 10 s timeout every minute, the loop goes on
        s.add(Job(("t", "hang"), interval=60, timeout=10, run=job("hang", 10_000)))
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(3599, stop.set)
        await s.run(stop)

    run_in_loop_time(main)
    assert starts["steady"] == [60.0 * i for i in range(60)]
    assert starts["hang"] == [60.0 * i for i in range(60)]
    assert starts["slow"] == [180.0 * i for i in range(20)]  # every third tick
    hang = store.states[("t", "hang")]
    assert hang.runs_total == 60 and hang.errors_total == 60
    assert hang.last is not None and "timed out after 10s" in (hang.last.error or "")
    assert store.states[("t", "steady")].errors_total == 0
