"""The Grafana dashboards of runbook-exporter, built with Grafana's typed builder SDK
(grafana-foundation-sdk) and rendered for the user's setup.

`render(Options(...))` returns {relative file name: text}: `dashboards/<uid>.json` for each
dashboard and, with `provisioning`, Grafana's provisioning files under `provisioning/`.
`runbook-exporter dashboards` writes them; the checked-in grafana/ directory is
`runbook-exporter dashboards --provisioning --output grafana` (a test keeps it current).

The data source: every query reads the dashboard's `$datasource` variable. For an import (the
default) each dashboard declares a `DS_PROMETHEUS` input, as grafana.com dashboards do, and
Grafana's import asks for the Prometheus data source and sets the variable to it. A provisioned
dashboard gets no import step (`__inputs` would stay unresolved), so with `provisioning` the
variable starts empty and Grafana picks the default Prometheus data source.

This module stays light (the CLI imports it at start); the SDK is imported by `render`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from exporter.dashboards.options import (
    DEFAULT_JOB_SELECTOR,
    DashboardsOptionError,
    Options,
    check,
)
from exporter.shipped import RUNBOOK_URL_BASE

__all__ = ["DashboardsOptionError", "Options", "add_parser", "render", "run_command"]


def shipped_rule_files() -> list[str]:
    """The shipped alert rules (their default render): the runbook links come from them."""
    from exporter.rules import render as render_rules

    return [t for name, t in render_rules().items() if name.endswith(".rules.yml")]


def board_builders():
    """File stem -> the function that returns its Board (imports the SDK)."""
    from exporter.dashboards import (
        apps,
        data,
        endpoints,
        overview,
        poolers,
        postgresql,
        queues,
        scheduled,
    )

    return {
        "runbook-overview": overview.board,
        "runbook-queues": queues.board,
        "runbook-postgresql": postgresql.board,
        "runbook-endpoints": endpoints.board,
        "runbook-app-pools": apps.board,
        "runbook-scheduled": scheduled.board,
        "runbook-data": data.board,
        "runbook-poolers": poolers.board,
    }


def render(options: Options | None = None) -> dict[str, str]:
    """Relative file name -> text of every dashboard (and the provisioning files)."""
    o = options or Options()
    check(o)
    with warnings.catch_warnings():
        # The SDK deprecates its v1 dashboard model (on import) for the v2 resource, which only
        # Grafana 12 reads, behind a feature flag, and neither the import of grafana.com JSON
        # nor file provisioning takes: v1 is what every current Grafana imports and provisions.
        warnings.simplefilter("ignore", DeprecationWarning)
        from exporter.dashboards import board, provisioning
        from exporter.dashboards.links import load_alerts

        alerts = load_alerts(shipped_rule_files())
        docs = {
            stem: board.to_json(board.build(make(o), alerts, o.runbook_url_base))
            for stem, make in board_builders().items()
        }
    out: dict[str, str] = {}
    for stem, doc in docs.items():
        if not o.provisioning:
            doc = provisioning.import_input(doc)
        out[f"dashboards/{stem}.json"] = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if o.provisioning:
        out.update(provisioning.FILES)
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboards",
        help="write the Grafana dashboards (dashboards/*.json, for import: they ask for the "
        "Prometheus data source) and, with --provisioning, Grafana provisioning files",
    )
    p.add_argument("--output", default="grafana", help="directory to write (default: %(default)s)")
    p.add_argument(
        "--runbook-url-base",
        default=RUNBOOK_URL_BASE,
        help="runbook links are <base><AlertName>.md (default: %(default)s)",
    )
    job = p.add_mutually_exclusive_group()
    job.add_argument("--job", help='the exporter\'s scrape job name: --job-selector job="NAME"')
    job.add_argument(
        "--job-selector",
        default=DEFAULT_JOB_SELECTOR,
        help="the exporter's scrape job in the overview's scrape panels, as `rules` takes it "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--provisioning",
        action="store_true",
        help="dashboards for Grafana's file provisioning (no import input) and the "
        "provisioning files under provisioning/",
    )


def escape(value: str) -> str:
    """A PromQL string literal's content for `value`."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def run_command(args: argparse.Namespace) -> int:
    job = f'job="{escape(args.job)}"' if args.job is not None else args.job_selector
    o = Options(args.runbook_url_base, args.provisioning, job)
    try:
        files = render(o)
    except DashboardsOptionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # no rules to link (shipped_rule_files)
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = Path(args.output)
    try:
        for name, text in files.items():
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError as e:
        print(f"error: --output {args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"wrote {len(files)} files under {out}/")
    return 0
