"""Alert rules: slo."""

from __future__ import annotations

from collections.abc import Callable

from exporter.rules.model import Alert, Group, Record, Variant, critical, duration_words, warning

# every window the burn-rate alerts read an error ratio over
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def _error_ratio(window: str) -> Record:
    return Record(
        f"app_endpoint:runbook_probe_error_ratio:rate{window}",
        why="share of failed probes per endpoint over each window the alerts use"
        if window == WINDOWS[0]
        else "",
        expr=f"""
            sum by (app, endpoint) (rate(runbook_probe_failures_total[{window}]))
              /
            sum by (app, endpoint) (rate(runbook_probe_requests_total[{window}]))
        """,
    )


def _burn(
    level: Callable[..., Variant],
    for_: str,
    long: str,
    short: str,
    factor: str,
    share: str,
    all_in: str,
    min_failures: str = "",
) -> Variant:
    """One (long window, short window, burn factor) pair; `share` of a 30-day budget goes in
    one long window, all of it in `all_in` days."""
    long_words = duration_words(long).removeprefix("1 ")  # "the last hour", "every day"
    return level(
        for_,
        {"long_window": long},
        long=long,
        short=short,
        factor=factor,
        long_words=long_words,
        short_words=duration_words(short),
        share=share,
        all_in=all_in,
        min_failures=min_failures,
    )


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
    about="""
        SLO alerts on endpoint availability: multiwindow, multi-burn-rate, as in the SRE workbook
        (chapter "Alerting on SLOs"). The objective is the exporter's runbook_slo_objective per
        endpoint (slo_objective in its config, 0.999 by default; 0.999 here too where the series is
        missing). A failed probe is a bad event. Page: 14.4x the budget rate over 1h and 5m, or 6x
        over 6h and 30m; ticket: 3x over 1d and 2h, or 1x over 3d and 6h (a 30-day budget period).
        One group: the rules of a group run in order, so every alert sees this evaluation's ratios
        (in two groups the order between them is not defined).
    """,
    rules=(
        *(_error_ratio(w) for w in WINDOWS),
        Record(
            "app_endpoint:runbook_slo_error_budget:ratio",
            why="the error budget: 1 - objective",
            expr="""
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
            expr="""
                app_endpoint:runbook_probe_error_ratio:rate${long}
                  > ${factor} * app_endpoint:runbook_slo_error_budget:ratio
                and
                app_endpoint:runbook_probe_error_ratio:rate${short}
                  > ${factor} * app_endpoint:runbook_slo_error_budget:ratio
                ${min_failures}
            """,
            summary="{{ $labels.app }}/{{ $labels.endpoint }} burns its error budget at over ${factor}x the sustainable rate",
            description="""
                {{ $value | humanizePercentage }} of the probes of
                {{ $labels.app }}/{{ $labels.endpoint }} failed over the last ${long_words} and over
                the last ${short_words}: more than ${factor} times the
                {{ with printf `app_endpoint:runbook_slo_error_budget:ratio{app=%q,endpoint=%q}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                error budget of its
                {{ with printf `1 - app_endpoint:runbook_slo_error_budget:ratio{app=%q,endpoint=%q}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                objective. At this rate ${share} of a 30-day budget goes every ${long_words}, and all of
                it in ${all_in} days.
            """,
            # (long window, short window, burn factor): the SRE workbook's pairs for a 30-day
            # budget; the pages also want 3 failed probes in the long window
            variants=(
                _burn(
                    critical,
                    "2m",
                    "1h",
                    "5m",
                    "14.4",
                    "2%",
                    "about 2",
                    _at_least_3_failures("1h", why=True),
                ),
                _burn(critical, "2m", "6h", "30m", "6", "5%", "5", _at_least_3_failures("6h")),
                _burn(warning, "15m", "1d", "2h", "3", "10%", "10"),
                _burn(warning, "15m", "3d", "6h", "1", "10%", "30"),
            ),
        ),
    ),
)
