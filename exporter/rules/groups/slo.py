"""Alert rules: slo."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, Record, critical, warning


def _burn(
    long: str,
    short: str,
    factor: str,
    long_words: str,
    short_words: str,
    share: str,
    every: str,
    all_in: str,
) -> dict[str, str]:
    return {
        "long": long,
        "short": short,
        "factor": factor,
        "long_words": long_words,
        "short_words": short_words,
        "share": share,
        "every": every,
        "all_in": all_in,
    }


def _at_least_3_failures(window: str, why: bool = False) -> str:
    comment = (
        "# at least 3 failed probes (runbook 004's bar): with 60 s probes a single failure is\n"
        "# already 1.7 % of an hour and would page on its own\n"
    )
    return (
        "and\n"
        f"{comment if why else ''}"
        f"sum by (app, endpoint) (increase(runbook_probe_failures_total[{window}])) >= 3\n"
    )


GROUP = Group(
    area="slo",
    name="runbook-exporter.slo",
    about=(
        "SLO alerts on endpoint availability: multiwindow, multi-burn-rate, as in the SRE workbook "
        '(chapter "Alerting on SLOs"). The objective is the exporter\'s runbook_slo_objective per '
        "endpoint (slo_objective in its config, 0.999 by default; 0.999 here too where the series "
        "is missing). A failed probe is a bad event. Page: 14.4x the budget rate over 1h and 5m, "
        "or "
        "6x over 6h and 30m; ticket: 3x over 1d and 2h, or 1x over 3d and 6h (a 30-day budget "
        "period)."
    ),
    rules=(
        Record(
            "app_endpoint:runbook_probe_error_ratio:rate5m",
            why=(
                "one group: the rules of a group run in order, so every alert sees this "
                "evaluation's ratios (in two groups the order between them is not defined) share "
                "of "
                "failed probes per endpoint over each window the alerts use"
            ),
            expr="""\
sum by (app, endpoint) (rate(runbook_probe_failures_total[5m]))
  /
sum by (app, endpoint) (rate(runbook_probe_requests_total[5m]))
""",
        ),
        Record(
            "app_endpoint:runbook_probe_error_ratio:rate30m",
            expr="""\
sum by (app, endpoint) (rate(runbook_probe_failures_total[30m]))
  /
sum by (app, endpoint) (rate(runbook_probe_requests_total[30m]))
""",
        ),
        Record(
            "app_endpoint:runbook_probe_error_ratio:rate1h",
            expr="""\
sum by (app, endpoint) (rate(runbook_probe_failures_total[1h]))
  /
sum by (app, endpoint) (rate(runbook_probe_requests_total[1h]))
""",
        ),
        Record(
            "app_endpoint:runbook_probe_error_ratio:rate2h",
            expr="""\
sum by (app, endpoint) (rate(runbook_probe_failures_total[2h]))
  /
sum by (app, endpoint) (rate(runbook_probe_requests_total[2h]))
""",
        ),
        Record(
            "app_endpoint:runbook_probe_error_ratio:rate6h",
            expr="""\
sum by (app, endpoint) (rate(runbook_probe_failures_total[6h]))
  /
sum by (app, endpoint) (rate(runbook_probe_requests_total[6h]))
""",
        ),
        Record(
            "app_endpoint:runbook_probe_error_ratio:rate1d",
            expr="""\
sum by (app, endpoint) (rate(runbook_probe_failures_total[1d]))
  /
sum by (app, endpoint) (rate(runbook_probe_requests_total[1d]))
""",
        ),
        Record(
            "app_endpoint:runbook_probe_error_ratio:rate3d",
            expr="""\
sum by (app, endpoint) (rate(runbook_probe_failures_total[3d]))
  /
sum by (app, endpoint) (rate(runbook_probe_requests_total[3d]))
""",
        ),
        Record(
            "app_endpoint:runbook_slo_error_budget:ratio",
            why="the error budget: 1 - objective",
            expr="""\
1 - (
    max by (app, endpoint) (runbook_slo_objective)
  or
    0.999 * group by (app, endpoint) (runbook_probe_requests_total)
)
""",
        ),
        Alert(
            "EndpointErrorBudgetBurn",
            why="the alerts: page on fast burns, ticket on slow ones",
            expr="""\
app_endpoint:runbook_probe_error_ratio:rate${long}
  > ${factor} * app_endpoint:runbook_slo_error_budget:ratio
and
app_endpoint:runbook_probe_error_ratio:rate${short}
  > ${factor} * app_endpoint:runbook_slo_error_budget:ratio
${min_failures}""",
            summary=(
                "{{ $labels.app }}/{{ $labels.endpoint }} burns its error budget at over "
                "${factor}x the sustainable rate"
            ),
            description=(
                "{{ $value | humanizePercentage }} of the probes of {{ $labels.app }}/{{ "
                "$labels.endpoint }} failed over the last ${long_words} and over the last "
                "${short_words}: more than ${factor} times the {{ with printf "
                "`app_endpoint:runbook_slo_error_budget:ratio{app=%q,endpoint=%q}` $labels.app "
                "$labels.endpoint | query }}{{ . | first | value | humanizePercentage }}{{ end }} "
                "error budget of its {{ with printf `1 - "
                "app_endpoint:runbook_slo_error_budget:ratio{app=%q,endpoint=%q}` $labels.app "
                "$labels.endpoint | query }}{{ . | first | value | humanizePercentage }}{{ end }} "
                "objective. At this rate ${share} of a 30-day budget goes every ${every}, and all "
                "of it in ${all_in} days."
            ),
            # (long window, short window, burn factor): the SRE workbook's pairs for a 30-day
            # budget; the pages also want 3 failed probes in the long window
            variants=(
                critical(
                    "2m",
                    {"long_window": "1h"},
                    **_burn("1h", "5m", "14.4", "hour", "5 minutes", "2%", "hour", "about 2"),
                    min_failures=_at_least_3_failures("1h", why=True),
                ),
                critical(
                    "2m",
                    {"long_window": "6h"},
                    **_burn("6h", "30m", "6", "6 hours", "30 minutes", "5%", "6 hours", "5"),
                    min_failures=_at_least_3_failures("6h"),
                ),
                warning(
                    "15m",
                    {"long_window": "1d"},
                    **_burn("1d", "2h", "3", "day", "2 hours", "10%", "day", "10"),
                    min_failures="",
                ),
                warning(
                    "15m",
                    {"long_window": "3d"},
                    **_burn("3d", "6h", "1", "3 days", "6 hours", "10%", "3 days", "30"),
                    min_failures="",
                ),
            ),
        ),
    ),
)
