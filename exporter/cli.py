"""Command line: `runbook-exporter [flags]`, `runbook-exporter doctor`, `runbook-exporter demo`,
`runbook-exporter discover`, `runbook-exporter rules`, `runbook-exporter dashboards`,
`runbook-exporter runbooks`, `runbook-exporter alertmanager-example`.

Flags follow the Prometheus exporters' style. Exit codes: 0 ok, 1 runtime failure,
2 configuration error (the message names file, path and value).
"""

from __future__ import annotations

import argparse
import sys

from exporter import __version__
from exporter import shard as sharding
from exporter.config import Config, ConfigError, load_config
from exporter.dashboards import add_parser as add_dashboards_parser
from exporter.server import DEFAULT_PORT
from exporter.serving import serve


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runbook-exporter",
        description="Prometheus exporter for PostgreSQL job queues, database health and app "
        "health endpoints.",
    )
    p.add_argument(
        "--config.file",
        dest="config_file",
        default="runbook-exporter.yml",
        help="configuration file (default: %(default)s)",
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        help=f"address to serve /metrics on, host:port or [v6]:port; repeatable "
        f"(default: :{DEFAULT_PORT}, every interface, IPv4 and IPv6)",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="TLS and basic auth settings in the Prometheus exporter-toolkit format "
        "(docs/security.md); reread when it changes",
    )
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        help="path to serve the metrics at; the landing page at / links it (default: %(default)s)",
    )
    p.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"]
    )
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print what would be collected, exit 0 or 2",
    )
    p.add_argument("--shard", default=None, metavar="i/N", help=sharding.HELP)
    p.add_argument("--version", action="version", version=f"runbook-exporter {__version__}")
    sub = p.add_subparsers(dest="command")
    d = sub.add_parser(
        "doctor",
        help="connect to every target and check tables, columns, "
        "indexes and extensions; exit 0 when all is well, 1 on findings, 2 on "
        "config errors",
    )
    # SUPPRESS: `runbook-exporter --config.file=x doctor` keeps x instead of this default
    d.add_argument("--config.file", dest="config_file", default=argparse.SUPPRESS)
    add_dashboards_parser(sub)
    disc = sub.add_parser(
        "discover",
        help="inspect a database (read-only) and print a configuration for it: job-queue "
        "tables, pgmq queues, pg_cron, pg_net, with what is missing as comments; exit 0 when "
        "it found something to monitor, 1 when not, 2 on DSN or connection errors",
    )
    disc.add_argument(
        "--dsn",
        required=True,
        help="libpq DSN or URI of the database; better without a password (use PGPASSWORD or "
        "~/.pgpass): a password given is never printed",
    )
    disc.add_argument("--name", default=None, help="the target's name (default: the database's)")
    disc.add_argument(
        "--output", default=None, help="write the configuration to this file instead of stdout"
    )
    disc.add_argument("--force", action="store_true", help="replace an existing --output file")
    rb = sub.add_parser(
        "runbooks",
        help="write the runbook docs (one Markdown file per alert) into a directory, e.g. to "
        "host them where `rules --runbook-url-base` points",
    )
    rb.add_argument("--output", required=True, help="directory (created; same names replaced)")
    sub.add_parser(
        "alertmanager-example",
        help="print the example Alertmanager configuration for the shipped alerts",
    )
    demo = sub.add_parser(
        "demo",
        help="run the exporter against an embedded throwaway "
        "PostgreSQL seeded with a sample queue, plus a sample app",
    )
    demo.add_argument("--web.listen-address", dest="listen", default=f"127.0.0.1:{DEFAULT_PORT}")
    demo.add_argument(
        "--incident",
        action="append",
        default=[],
        help="inject an incident (repeatable): backlog, stuck, retries, pool, slow, down",
    )
    demo.add_argument(
        "--no-stack",
        action="store_true",
        help="do not start Prometheus and Alertmanager even when installed",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=0,
        help="stop after this many seconds (0: run until interrupted)",
    )
    from exporter.rules.cli import add_arguments as add_rules_arguments

    add_rules_arguments(
        sub.add_parser("rules", help="render the alert rules for your Prometheus (docs/alerts.md)")
    )
    return p


def summary(config: Config, source: str) -> str:
    """What --check-config prints: every target, collector, queue and endpoint with the values
    in effect (defaults and derived timeouts applied), never a password, token or query string."""
    from exporter.secrets import redact

    lines = [f"{source}: configuration is valid"]
    for t in config.targets:
        lines.append(f"target {t.name} ({t.safe_dsn()})")
        # every run is a transaction with these limits (SET LOCAL); without a transaction
        # pooler the session carries them too
        where = "each run (pooler: transaction)" if t.pooler == "transaction" else "session"
        lines.append(
            f"  {where}: statement_timeout {t.statement_timeout:g}s, lock_timeout "
            f"{t.lock_timeout:g}s, connect_timeout {t.connect_timeout:g}s"
        )
        for n, s in t.enabled_collectors():
            lines.append(
                f"  collector {n}: every {t.interval_of(s):g}s, timeout {t.timeout_of(s):g}s"
            )
        for q in t.queues:
            th = q.thresholds
            lines.append(
                f"  queue {q.label or '*'}: {q.describe()}, stuck after {q.stuck_after:g}s, "
                f"depth warning > {th.depth_warning}, critical > {th.depth_critical}"
            )
    for a in config.apps:
        lines.append(f"app {a.name}: {len(a.endpoints)} endpoint(s)")
        for e in a.endpoints:
            lines.append(f"  endpoint {e.name}: {e.describe()}")
    for b in config.backups:
        lines.append(
            f"backup {b.name}: {b.describe()}, every {b.interval:g}s, timeout {b.timeout:g}s, "
            f"max age warning {b.max_age_warning:g}s, critical {b.max_age_critical:g}s"
        )
    # describe() and safe_dsn() leave secrets out; this is the net under them
    return redact("\n".join(lines))


def _load(path: str, check_only: bool = False) -> Config:
    """The configuration, or exit 2 with the located errors on stderr. Starting (and the
    doctor) requires every variable and file the config names; --check-config (check_only)
    may run where the secrets are not mounted, so missing secret sources are warnings there."""
    try:
        config = load_config(path, environment="warn" if check_only else "require")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in config.warnings:
        print(f"warning: {warning} (the exporter will not start without it)", file=sys.stderr)
    return config


def _load_web(path: str) -> None:
    from exporter.webconfig import load_web_config

    try:
        load_web_config(path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_telemetry_path(path: str) -> None:
    from exporter.landing import check_telemetry_path

    try:
        check_telemetry_path(path)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _shard(value: str | None) -> sharding.Shard:
    try:
        return sharding.parse(value)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from exporter import logs

    logs.setup(getattr(args, "log_level", "info"), getattr(args, "log_format", "logfmt"))
    if args.command == "demo":
        from exporter.demo.run import run_demo

        return run_demo(args.listen, args.incident, args.duration, not args.no_stack)
    if args.command == "dashboards":  # reads no configuration either
        from exporter.dashboards import run_command

        return run_command(args)
    if args.command in ("runbooks", "alertmanager-example"):  # shipped files, no config
        from exporter import shipped

        if args.command == "runbooks":
            return shipped.run_runbooks(args.output)
        return shipped.run_alertmanager_example()
    if args.command == "rules":  # reads no configuration: it renders the shipped rules
        from exporter.rules.cli import run_rules

        return run_rules(args)
    if args.command == "discover":  # reads no configuration: it writes one
        from exporter.discover import run_discover

        return run_discover(args.dsn, args.name, args.output, args.force)
    shard = _shard(getattr(args, "shard", None))
    full = _load(args.config_file, check_only=args.check_config)
    config = shard.select(full)
    if getattr(args, "web_config_file", None):
        _load_web(args.web_config_file)
    _check_telemetry_path(args.telemetry_path)
    if args.command == "doctor":
        from exporter.doctor import run_doctor

        return run_doctor(config)
    if args.check_config:
        print(summary(config, args.config_file))
        if shard.count > 1:
            print(shard.describe(config, full))
        return 0
    return serve(
        config,
        args.listen or [f":{DEFAULT_PORT}"],
        config_file=args.config_file,
        web_config=args.web_config_file,
        telemetry_path=args.telemetry_path,
        shard=shard,
    )
