"""Queues: job queues in PostgreSQL tables (runbooks 000 and 003)."""

from __future__ import annotations

from exporter.dashboards.board import Board, Row
from exporter.dashboards.options import Options
from exporter.dashboards.panels import (
    graph,
    query,
    single,
    stat_levels,
    timeline,
    ts,
    value_mapping,
)
from exporter.dashboards.promql import FAILURE_RATIO, PENDING, QUEUE_STATUS, RECENT, TQ, T

Q = "{{target}} / {{queue}}"
LINE = f"{Q} {{{{severity}}}} threshold"  # the legend of a threshold series' lines
EXACT_ESTIMATED = value_mapping(("exact", "green"), ("estimated", "orange"))


def board(o: Options) -> Board:
    return Board(
        "runbook-queues",
        "runbook-exporter / Queues",
        "Job queues in PostgreSQL tables (runbooks 000 and 003).",
        ["target", "queue"],
        [
            Row("Status", [stat_levels("Queue status", QUEUE_STATUS, Q, w=24)]),
            Row(
                "Depth",
                [
                    ts("Pending jobs", PENDING, f"{Q} pending")
                    .description("Jobs waiting for a worker, with the depth thresholds.")
                    .threshold(f"runbook_queue_depth_threshold{{{TQ}}}", LINE),
                    ts(
                        "Jobs by status",
                        f"sum by (target, queue, status) (runbook_queue_jobs{{{TQ}}})",
                        f"{Q} {{{{status}}}}",
                        stack=True,
                    ).description(
                        "Exact counts of the active statuses; completed jobs (estimated from "
                        "planner statistics unless count_terminal is exact) are on their own "
                        "axis scale in the next panel."
                    ),
                    ts(
                        "Completed jobs (estimated)",
                        f"runbook_queue_jobs_estimated{{{TQ}}}",
                        f"{Q} {{{{status}}}}",
                    ).description(
                        "Completed jobs from planner statistics (count_terminal: estimate): as "
                        "fresh as the table's last ANALYZE."
                    ),
                    ts(
                        "Oldest pending job age",
                        f"runbook_queue_oldest_pending_age_seconds{{{TQ}}}",
                        Q,
                        "s",
                    ).threshold(f"runbook_queue_oldest_pending_threshold_seconds{{{TQ}}}", LINE),
                ],
            ),
            Row(
                "Jobs that need a person",
                [
                    ts("Stuck jobs", f"runbook_queue_stuck_jobs{{{TQ}}}", Q)
                    .description(
                        "Processing jobs not updated for longer than the queue's stuck_after "
                        "(runbook 000: 30 min)."
                    )
                    .span(8)
                    .threshold(f"runbook_queue_stuck_threshold{{{TQ}}}", LINE),
                    ts("Retries exhausted", f"runbook_queue_retries_exhausted_jobs{{{TQ}}}", Q)
                    .description(
                        "Failed jobs with retry_count at max_retries: nothing retries them "
                        "automatically."
                    )
                    .span(8)
                    .threshold(f"runbook_queue_retries_exhausted_threshold{{{TQ}}}", LINE),
                    ts("Dead-letter jobs", f"runbook_queue_dead_letter_jobs{{{TQ}}}", Q)
                    .description("Jobs in the dead-letter status or table (runbook 003).")
                    .span(8)
                    .threshold(f"runbook_queue_dead_letter_threshold{{{TQ}}}", LINE),
                ],
            ),
            Row(
                "Throughput",
                [
                    ts(
                        "Jobs finished per minute",
                        f"60 * sum by (target, queue, outcome) ({RECENT})\n"
                        f"  / on(target, queue) group_left "
                        f"runbook_queue_recent_window_seconds{{{TQ}}}",
                        f"{Q} {{{{outcome}}}}",
                        "opm",
                    ).description(
                        "Jobs that reached completed or failed within the queue's recent_window, "
                        "per minute."
                    ),
                    ts("Failure ratio", FAILURE_RATIO, Q, "percentunit")
                    .description(
                        "Share of the recently finished jobs that failed (runbook 000: warning "
                        "above 3 %, critical above 10 %)."
                    )
                    .threshold(f"runbook_queue_failure_ratio_threshold{{{TQ}}}", LINE),
                ],
            ),
            Row(
                "Collection",
                [
                    single(
                        "Queue settings",
                        query(
                            f"runbook_queue_stuck_after_seconds{{{TQ}}}",
                            f"{Q} stuck after",
                            instant=True,
                        ),
                        query(
                            f"runbook_queue_recent_window_seconds{{{TQ}}}",
                            f"{Q} recent window",
                            instant=True,
                        ),
                        unit="s",
                    ).height(5),
                    graph(
                        "Queues collector",
                        query(
                            f'runbook_collector_success{{{T}, collector="queues"}}',
                            "{{target}} run success",
                        ),
                        # which queue broke: the others are still served (docs/queues.md)
                        query(f"runbook_queue_up{{{TQ}}}", "{{queue}} collected"),
                    )
                    .height(5)
                    .max(1),
                    timeline(
                        "Failed counts estimated",
                        f"runbook_queue_failed_jobs_estimated{{{TQ}}}",
                        Q,
                        EXACT_ESTIMATED,
                    )
                    .description(
                        "estimated: a failed count of the queue reached its exact_count_limit, so "
                        "the failed and retries-exhausted figures above are planner estimates "
                        "(never below the limit); exact otherwise (docs/queues.md)."
                    )
                    .span(24)
                    .height(5),
                ],
            ),
        ],
    )
