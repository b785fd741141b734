"""`runbook-exporter rules`: render the alert rules for your Prometheus (docs/alerts.md).

Writes into --output DIR (one `<group>.rules.yml` per group, `tests/` with --tests) or, without
it, to stdout (all groups in one rule file, or the PrometheusRule objects). --check compares
DIR with what would be written and exits 1 when it differs. Bad options exit 2 with one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.rules.model import DEFAULT_JOB_SELECTOR
from exporter.shipped import RUNBOOK_URL_BASE

if TYPE_CHECKING:
    from exporter.rules.renderer import Options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default=None, help="directory to write into (default: stdout)")
    p.add_argument(
        "--format",
        choices=["files", "prometheusrule"],
        default="files",
        help="Prometheus rule files, or PrometheusRule objects for the Prometheus Operator",
    )
    job = p.add_mutually_exclusive_group()
    job.add_argument("--job", default=None, help="the exporter's scrape job name")
    job.add_argument(
        "--job-selector",
        default=None,
        help=f"label matchers of the exporter's scrape job (default: {DEFAULT_JOB_SELECTOR})",
    )
    p.add_argument(
        "--runbook-url-base",
        default=RUNBOOK_URL_BASE,
        help="where the runbooks are: <base><AlertName>.md, or a URL with {alert} "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a label added to every alert (repeatable)",
    )
    groups = p.add_mutually_exclusive_group()
    groups.add_argument(
        "--groups", default=None, help="only these groups, e.g. queues,postgres,exporter"
    )
    groups.add_argument("--exclude-groups", default="", help="leave out these groups, e.g. host")
    p.add_argument(
        "--for",
        dest="for_",
        action="append",
        default=[],
        metavar="ALERT[:SEVERITY]=DURATION",
        help="override an alert's for: (repeatable), e.g. QueueBacklogHigh:warning=20m",
    )
    p.add_argument(
        "--tests",
        action="store_true",
        help="also write the promtool unit tests for this render under tests/",
    )
    p.add_argument(
        "--check", action="store_true", help="exit 1 when --output differs from this render"
    )


def options_from(args: argparse.Namespace) -> Options:
    from exporter.rules.renderer import Options, job_selector_for

    return Options(
        job_selector=(
            job_selector_for(args.job)
            if args.job is not None
            else args.job_selector or DEFAULT_JOB_SELECTOR
        ),
        runbook_url_base=args.runbook_url_base,
        extra_labels=_pairs("--label", args.label),
        groups=_names(args.groups) if args.groups is not None else None,
        exclude_groups=_names(args.exclude_groups),
        for_overrides=_pairs("--for", args.for_),
        format=args.format,
        tests=args.tests,
    )


def run_rules(args: argparse.Namespace) -> int:
    from exporter.rules.renderer import RulesOptionError, render, render_one

    try:
        if args.job is not None and not args.job.strip():
            raise RulesOptionError("--job: the job name is empty")
        if (args.check or args.tests) and not args.output:
            raise RulesOptionError("--check and --tests need --output DIR")
        if args.output is None:
            text = render_one(options_from(args))
        else:
            files = render(options_from(args))
    except RulesOptionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    if args.check:
        stale = stale_files(files, out)
        for name in stale:
            print(f"{out / name} is not the current render", file=sys.stderr)
        return 1 if stale else 0
    try:
        write_files(files, out)
    except OSError as e:
        print(f"error: --output {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} files to {out}", file=sys.stderr)
    return 0


def write_files(files: dict[str, str], out: Path) -> None:
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def stale_files(files: dict[str, str], out: Path) -> list[str]:
    """Names in `files` whose copy under `out` is missing or different."""
    return [n for n, t in files.items() if not (out / n).is_file() or (out / n).read_text() != t]


def _pairs(option: str, items: list[str]) -> dict[str, str]:
    from exporter.rules.renderer import RulesOptionError

    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise RulesOptionError(f"{option}: {item!r} is not NAME=VALUE")
        if name.strip() in out:
            raise RulesOptionError(f"{option}: {name.strip()} given twice")
        out[name.strip()] = value.strip()
    return out


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]
