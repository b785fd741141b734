"""Real Prometheus and Alertmanager on 127.0.0.1, for the end-to-end tests and the demo.

`DevStack` starts a `WebhookSink` (a small HTTP server that keeps every notification it is
sent), an Alertmanager loaded with the shipped `alerts/alertmanager.yml` whose receivers are
rewritten to point at the sink, and a Prometheus that scrapes one exporter every second or so,
evaluates the shipped `alerts/*.rules.yml` and sends to that Alertmanager. Every generated or
rewritten file lives in one temporary directory; the shipped files are only read. The rewrite
shortens `for:` (and `keep_firing_for:`) and the Alertmanager timers so an incident turns into
a notification in seconds; everything else of the rules and the routing is used as shipped.

Prometheus and Alertmanager come from Debian's packages (`scripts/setup.sh`): the binaries are
`prometheus` and `prometheus-alertmanager` (or `alertmanager` elsewhere); the environment
variables RUNBOOK_PROMETHEUS and RUNBOOK_ALERTMANAGER name others. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from exporter.configtypes import parse_duration
from exporter.demo.pgserver import free_port

# The checked-in rules of the source checkout this file sits in (the tests read them there). The
# stack itself loads the renderer's default output, which an installed wheel carries as well.
ALERTS_DIR = Path(__file__).resolve().parents[2] / "alerts"
LOOPBACK = "127.0.0.1"


class ToolMissing(RuntimeError):
    """Prometheus or Alertmanager is not installed (run scripts/setup.sh)."""


def _find(env: str, names: Iterable[str]) -> str:
    explicit = os.environ.get(env)
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise ToolMissing(f"{env}={explicit} is not an executable file")
        return explicit
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ToolMissing(
        f"none of {list(names)} found on PATH: run scripts/setup.sh (Debian packages "
        f"prometheus and prometheus-alertmanager) or set {env}"
    )


def find_prometheus() -> str:
    return _find("RUNBOOK_PROMETHEUS", ["prometheus"])


def find_alertmanager() -> str:
    return _find("RUNBOOK_ALERTMANAGER", ["alertmanager", "prometheus-alertmanager"])


def tools_available() -> bool:
    try:
        find_prometheus()
        find_alertmanager()
    except ToolMissing:
        return False
    return True


# --- durations ---------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    return f"{ms // 1000}s"


# --- test-time rewrites of the shipped files --------------------------------------------


FIRST_SCRAPE_WAIT = 15.0  # seconds the stack waits for its first scrape before loading rules


def shorten_rules(doc: dict, max_for: float) -> dict:
    """A copy of a rules document with every `for:`/`keep_firing_for:` cut to at most max_for.

    Nothing else changes: expressions, labels and annotations stay as shipped.
    """
    out = copy.deepcopy(doc)
    for group in out.get("groups") or []:
        for rule in group.get("rules") or []:
            for key in ("for", "keep_firing_for"):
                if key in rule and parse_duration(rule[key]) > max_for:
                    rule[key] = format_duration(max_for)
    return out


def rewrite_rule_files(sources: Iterable[Path], dest: Path, max_for: float) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(sources):
        doc = yaml.safe_load(src.read_text()) or {}
        target = dest / src.name
        target.write_text(yaml.safe_dump(shorten_rules(doc, max_for), sort_keys=False))
        written.append(target)
    return written


@dataclass(frozen=True)
class AlertmanagerTimers:
    """Short timers for tests: the shipped values would make a test wait for minutes."""

    group_wait: float = 1.0
    group_interval: float = 1.0
    repeat_interval: float = 3600.0  # no repeats within a test: one firing, one resolved
    resolve_timeout: float = 10.0


def _rewrite_routes(route: dict, timers: AlertmanagerTimers, top: bool) -> None:
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if top or key in route:
            route[key] = format_duration(getattr(timers, key))
    for child in route.get("routes") or []:
        _rewrite_routes(child, timers, top=False)


def rewrite_alertmanager_config(
    doc: dict, sink_url: str, timers: AlertmanagerTimers, base_dir: Path = ALERTS_DIR
) -> dict:
    """A copy of an Alertmanager config whose receivers all post to `sink_url/<receiver>`.

    Webhook receivers keep their other settings (send_resolved, max_alerts); any other kind of
    integration is replaced by a webhook so nothing leaves the machine. HTTP credentials are
    dropped (the sink wants none); template paths are made absolute. Routing, grouping and
    inhibition stay as shipped, with `timers` instead of the shipped waits.
    """
    out = copy.deepcopy(doc)
    glob_ = out.setdefault("global", {}) or {}
    out["global"] = glob_
    glob_["resolve_timeout"] = format_duration(timers.resolve_timeout)
    for key in list(glob_):
        if key.startswith(("slack_", "pagerduty_", "opsgenie_", "smtp_", "wechat_", "victorops_")):
            del glob_[key]
    glob_.pop("http_config", None)
    out["templates"] = [str(base_dir / t) for t in out.get("templates") or []]
    if not out["templates"]:
        del out["templates"]
    _rewrite_routes(out.setdefault("route", {}), timers, top=True)
    for receiver in out.get("receivers") or []:
        name = receiver["name"]
        url = f"{sink_url}/{name}"
        hooks = []
        for hook in receiver.get("webhook_configs") or []:
            h = {k: v for k, v in hook.items() if k not in ("url", "url_file", "http_config")}
            hooks.append({**h, "url": url})
        others = [k for k in receiver if k.endswith("_configs") and k != "webhook_configs"]
        for k in others:
            del receiver[k]
        if others and not hooks:
            hooks.append({"url": url, "send_resolved": True})
        if hooks:
            receiver["webhook_configs"] = hooks
    return out


def prometheus_config(
    scrape_targets: list[str],
    alertmanager: str | None,
    rule_files: list[Path],
    scrape_interval: float = 1.0,
    evaluation_interval: float = 1.0,
) -> dict:
    interval = format_duration(scrape_interval)
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": format_duration(evaluation_interval),
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": "runbook-exporter", "static_configs": [{"targets": scrape_targets}]}
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


# --- the webhook sink -----------------------------------------------------------------------


@dataclass
class Notification:
    """One webhook call from Alertmanager (payload version 4)."""

    received_at: float  # time.monotonic() when it arrived
    path: str
    payload: dict[str, Any]

    @property
    def receiver(self) -> str:
        return str(self.payload.get("receiver", ""))

    @property
    def status(self) -> str:
        return str(self.payload.get("status", ""))

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return list(self.payload.get("alerts") or [])


@dataclass
class SinkAlert:
    """One alert of one notification, with when it arrived and through which receiver."""

    received_at: float
    receiver: str
    status: str  # firing or resolved: the alert's own status
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


def _flatten(notifications: Iterable[Notification], since: float) -> list[SinkAlert]:
    return [
        SinkAlert(
            n.received_at,
            n.receiver,
            str(a.get("status", "")),
            dict(a.get("labels") or {}),
            dict(a.get("annotations") or {}),
        )
        for n in notifications
        if n.received_at >= since
        for a in n.alerts
    ]


class WebhookSink:
    """An HTTP server (127.0.0.1 by default) that keeps every Alertmanager webhook
    notification; `on_notification` is called with each one as it arrives."""

    def __init__(
        self,
        host: str = LOOPBACK,
        port: int = 0,
        on_notification: Callable[[Notification], None] | None = None,
    ) -> None:
        sink = self
        self.on_notification = on_notification
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._notifications: list[Notification] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                sink._add(Notification(time.monotonic(), self.path, payload))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sink", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> WebhookSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever on a server never started
            self.httpd.shutdown()
        self.httpd.server_close()

    def _add(self, n: Notification) -> None:
        with self._changed:
            self._notifications.append(n)
            self._changed.notify_all()
        if self.on_notification is not None:
            self.on_notification(n)

    @property
    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    def alerts(self, since: float = 0.0) -> list[SinkAlert]:
        """Every alert of every notification received at or after `since` (monotonic)."""
        return _flatten(self.notifications, since)

    def wait_for_alert(
        self,
        predicate: Callable[[SinkAlert], bool],
        timeout: float,
        since: float = 0.0,
        what: str = "",
    ) -> SinkAlert:
        """The first alert received since `since` that matches; AssertionError after timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                got = _flatten(self._notifications, since)
                for sa in got:
                    if predicate(sa):
                        return sa
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(a.status, a.name, a.labels.get("severity")) for a in got]
                    raise AssertionError(
                        f"no notification for {what or predicate} within {timeout:g}s; "
                        f"received since then: {seen}"
                    )
                self._changed.wait(min(left, 0.5))

    def __enter__(self) -> WebhookSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the two servers ----------------------------------------------------------------------


class _Server:
    name = "server"

    def __init__(self, cmd: list[str], port: int, workdir: Path) -> None:
        self.cmd, self.port, self.workdir = cmd, port, workdir
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 30) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout:g}s:\n{self.log()}")
            time.sleep(0.1)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        r.raise_for_status()
        return r.json()


class Prometheus(_Server):
    name = "prometheus"

    def __init__(self, config_file: Path, workdir: Path, port: int | None = None) -> None:
        port = port or free_port()
        cmd = [
            find_prometheus(),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--storage.tsdb.retention.time=1d",
            # resend firing alerts every second, not every minute: Alertmanager learns quickly
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
            "--web.enable-lifecycle",  # POST /-/reload: rules are loaded after the first scrape
        ]
        super().__init__(cmd, port, workdir)

    def reload(self) -> None:
        httpx.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def targets_scraped(self) -> bool:
        """Every target scraped at least once, up or not."""
        active = self.get("/api/v1/targets")["data"]["activeTargets"]
        return bool(active) and all(t["health"] in ("up", "down") for t in active)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result (vector: a list of {metric, value})."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        body = self.get("/api/v1/query", **params)
        result = body["data"]["result"]
        return result if isinstance(result, list) else [{"metric": {}, "value": result}]

    def series(self, match: str) -> list[dict[str, str]]:
        return self.get("/api/v1/series", **{"match[]": match})["data"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/alerts")["data"]["alerts"]

    def rule_groups(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/rules")["data"]["groups"]

    def targets_up(self) -> bool:
        active = self.get("/api/v1/targets")["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def wait_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = predicate()
                if got:
                    return got
            except (httpx.HTTPError, KeyError, AssertionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.25)


class Alertmanager(_Server):
    name = "alertmanager"

    def __init__(self, config_file: Path, workdir: Path, port: int | None = None) -> None:
        port = port or free_port()
        cmd = [
            find_alertmanager(),
            f"--config.file={config_file}",
            f"--storage.path={workdir / 'alertmanager-data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--cluster.listen-address=",  # no gossip: a single instance, nothing on 0.0.0.0
            "--log.level=warn",
        ]
        super().__init__(cmd, port, workdir)

    def alerts(self) -> list[dict[str, Any]]:
        return self.get("/api/v2/alerts")


# --- the whole stack ------------------------------------------------------------------------


class DevStack:
    """Sink + Alertmanager + Prometheus scraping `scrape_targets` (host:port of exporters).

    Use as a context manager, or call start() and stop(). `max_for` caps every rule's `for:`;
    scrape and evaluation run every `interval` seconds (1-5 s is the useful range).
    """

    def __init__(
        self,
        scrape_targets: list[str],
        rules: Iterable[Path] | None = None,
        alertmanager_config: Path | None = None,
        interval: float = 1.0,
        max_for: float = 2.0,
        timers: AlertmanagerTimers | None = None,
        with_alertmanager: bool = True,
        sink: WebhookSink | None = None,
    ) -> None:
        if not 0 < interval <= 5:
            raise ValueError("interval must be within (0, 5] seconds")
        self.scrape_targets = scrape_targets
        self.workdir = Path(tempfile.mkdtemp(prefix="runbook-devstack-"))
        self.rules = sorted(rules) if rules is not None else shipped_rules(self.workdir / "shipped")
        self.alertmanager_config = alertmanager_config or shipped_alertmanager_config()
        self.interval, self.max_for = interval, max_for
        self.timers = timers or AlertmanagerTimers()
        self.with_alertmanager = with_alertmanager
        self.sink = sink or WebhookSink()
        self.alertmanager: Alertmanager | None = None
        self.prometheus: Prometheus | None = None

    def start(self) -> DevStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if not self.rules:
            raise FileNotFoundError("no alert rules (*.rules.yml) to load")
        if self.with_alertmanager:
            self._start_alertmanager()
        rule_files = rewrite_rule_files(self.rules, self.workdir / "rules", self.max_for)
        prom_file = self.workdir / "prometheus.yml"

        def write_config(rules: list[Path]) -> None:
            am = self.alertmanager.address if self.alertmanager else None
            config = prometheus_config(self.scrape_targets, am, rules, self.interval, self.interval)
            prom_file.write_text(yaml.safe_dump(config, sort_keys=False))

        # Rules come in only once every target has been scraped: before the first scrape,
        # absent(up) is true, and with `for:` cut to seconds a slow first scrape on a loaded
        # machine would page RunbookExporterDown although nothing is down. A Prometheus that
        # has run for a while (every real one) never evaluates before its first scrape.
        write_config([])
        self.prometheus = Prometheus(prom_file, self.workdir)
        self.prometheus.start()
        with contextlib.suppress(AssertionError):  # a target that never answers: "down" later
            self.prometheus.wait_until(
                self.prometheus.targets_scraped, FIRST_SCRAPE_WAIT, "the first scrape"
            )
        write_config(rule_files)
        self.prometheus.reload()

    def _start_alertmanager(self) -> None:
        if not self.alertmanager_config.is_file():
            raise FileNotFoundError(f"Alertmanager config {self.alertmanager_config} is missing")
        self.sink.start()
        am_doc = yaml.safe_load(self.alertmanager_config.read_text()) or {}
        am_file = self.workdir / "alertmanager.yml"
        am_file.write_text(
            yaml.safe_dump(
                rewrite_alertmanager_config(
                    am_doc, self.sink.url, self.timers, self.alertmanager_config.parent
                ),
                sort_keys=False,
            )
        )
        self.alertmanager = Alertmanager(am_file, self.workdir)
        self.alertmanager.start()

    def wait_scraped(self, timeout: float = 30) -> None:
        """Until every scrape target is up and the rules have been evaluated at least once."""
        prom = self.prom
        prom.wait_until(prom.targets_up, timeout, "every scrape target to be up")
        prom.wait_until(
            lambda: all(g.get("lastEvaluation", "").startswith("2") for g in prom.rule_groups()),
            timeout,
            "every rule group to be evaluated",
        )

    @property
    def prom(self) -> Prometheus:
        if self.prometheus is None:
            raise RuntimeError("the stack is not started")
        return self.prometheus

    @property
    def am(self) -> Alertmanager:
        if self.alertmanager is None:
            raise RuntimeError("the stack is not started")
        return self.alertmanager

    def stop(self) -> None:
        for server in (self.prometheus, self.alertmanager):
            if server is not None:
                server.stop()
        self.sink.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def describe(self) -> list[str]:
        """Where to look, for the demo and `python -m exporter.demo.devstack up`."""
        lines = []
        if self.prometheus:
            lines.append(f"Prometheus:             {self.prometheus.url}/alerts")
        if self.alertmanager:
            lines.append(f"Alertmanager:           {self.alertmanager.url}")
            lines.append(f"webhook sink:           {self.sink.url} (notifications printed)")
        return lines

    def logs(self) -> str:
        return "\n".join(
            f"--- {s.name} ---\n{s.log()}" for s in (self.prometheus, self.alertmanager) if s
        )

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def shipped_rules(directory: Path) -> list[Path]:
    """The shipped rules' default render (what alerts/ holds in a checkout), written into
    `directory`: from the package, so the demo's stack runs from an installed wheel too."""
    from exporter.rules import render

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render().items():
        if name.endswith(".rules.yml"):
            path = directory / Path(name).name
            path.write_text(text)
            paths.append(path)
    return sorted(paths)


def shipped_alertmanager_config() -> Path:
    from exporter.shipped import locate

    return locate("alerts/alertmanager.yml")


def iter_rules(files: Iterable[Path] | None = None) -> Iterator[dict[str, Any]]:
    """Every alerting rule of the shipped rule files (for docs and dashboard links)."""
    for path in sorted(files if files is not None else ALERTS_DIR.glob("*.rules.yml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                if "alert" in rule:
                    yield rule


# --- command line -----------------------------------------------------------------------------


def _print_notification(n: Notification) -> None:
    """One line per alert: when, which receiver, what, and the rule's summary in human units."""
    now = time.strftime("%H:%M:%S")
    for a in n.alerts:
        labels = a.get("labels") or {}
        others = ", ".join(
            f"{k}={v}"
            for k, v in sorted(labels.items())
            if k not in ("alertname", "severity", "instance", "job")
        )
        summary = (a.get("annotations") or {}).get("summary", "")
        print(
            f"{now} [{n.receiver}] {a.get('status', '?').upper()} {labels.get('alertname', '?')}"
            f" severity={labels.get('severity', '?')} {others}"
            + (f"\n    {summary}" if summary else ""),
            flush=True,
        )


def console_stack(scrape_targets: list[str], interval: float, max_for: float) -> DevStack:
    """A stack (not started) for a person watching a terminal (`runbook-exporter demo`,
    `python -m exporter.demo.devstack up`): Alertmanager sends within seconds (group_wait 5 s,
    group_interval 10 s) and every notification is printed, one line per alert."""
    return DevStack(
        scrape_targets,
        interval=interval,
        max_for=max_for,
        timers=AlertmanagerTimers(group_wait=5, group_interval=10, resolve_timeout=60),
        sink=WebhookSink(on_notification=_print_notification),
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m exporter.demo.devstack sink|up`: a webhook sink that prints what Alertmanager
    sends (deploy/compose.yaml runs it beside Alertmanager), or Prometheus + Alertmanager +
    sink against a running exporter, with shortened `for:` so an incident shows in seconds."""
    import argparse

    from exporter.server import parse_listen_address

    p = argparse.ArgumentParser(prog="python -m exporter.demo.devstack", description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sink_p = sub.add_parser("sink", help="print every webhook notification, one line per alert")
    sink_p.add_argument("--listen", default=f"{LOOPBACK}:9095", help="host:port to listen on")
    up = sub.add_parser("up", help="Prometheus + Alertmanager + sink scraping an exporter")
    up.add_argument("--scrape", default=f"{LOOPBACK}:9883", help="exporter host:port")
    up.add_argument("--interval", type=float, default=5.0, help="scrape/evaluation seconds")
    up.add_argument("--max-for", type=float, default=30.0, help="cap on every rule's for:")
    up.add_argument("--duration", type=float, default=0, help="stop after N s (0: Ctrl-C)")
    args = p.parse_args(argv)
    stop = threading.Event()
    if args.command == "sink":
        host, port = parse_listen_address(args.listen)
        with WebhookSink(host, port, on_notification=_print_notification) as sink:
            print(f"webhook sink on {sink.url}", flush=True)
            _wait(stop, 0)
        return 0
    try:
        stack = console_stack([args.scrape], interval=args.interval, max_for=args.max_for)
        stack.start()
    except (ToolMissing, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", flush=True)
        return 1
    try:
        print("\n".join(stack.describe()), flush=True)
        _wait(stop, args.duration)
    finally:
        stack.stop()
    return 0


def _wait(stop: threading.Event, duration: float) -> None:
    # SIGTERM too: as PID 1 of a container the default action would be to ignore it
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait(duration if duration > 0 else None)


if __name__ == "__main__":
    raise SystemExit(main())
