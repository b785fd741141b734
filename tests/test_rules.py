"""The rule renderer (exporter/rules/): the checked-in renders are current, one definition per
alert, a non-default render (another job, URL base, label, `for:`, a group left out) passes
`promtool check rules` and its own rendered `promtool test rules`, and `runbook-exporter rules`
turns bad options into one line and exit 2.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import cli
from exporter.rules import Options, RulesOptionError, job_selector_for, render
from exporter.rules.groups import GROUPS
from exporter.rules.model import Alert
from exporter.shipped import RUNBOOK_URL_BASE
from tests.helpers import tool
from tools import rulegen

WIKI = "https://wiki.example.com/runbooks/"
CUSTOM = Options(
    job_selector=job_selector_for("pg-monitor"),
    runbook_url_base=WIKI,
    extra_labels={"team": "db"},
    exclude_groups=["host"],
    for_overrides={"QueueBacklogHigh:warning": "20m"},
    tests=True,
)


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def rules_of(text: str) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def custom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("custom-rules")
    assert cli.main(["rules", "--output", str(out), *CUSTOM_ARGS]) == 0
    return out


CUSTOM_ARGS = [
    "--job",
    "pg-monitor",
    "--runbook-url-base",
    WIKI,
    "--label",
    "team=db",
    "--exclude-groups",
    "host",
    "--for",
    "QueueBacklogHigh:warning=20m",
    "--tests",
]


# --- the checked-in default render -----------------------------------------------------------


def test_checked_in_alerts_and_prometheusrule_are_the_default_render() -> None:
    assert rulegen.stale() == [], "stale: python -m tools.rulegen"
    assert rulegen.main(["--check"]) == 0
    # the PrometheusRule objects hold the same groups as the rule files
    objs = list(yaml.safe_load_all((rulegen.K8S / "prometheusrule.yaml").read_text()))
    files = sorted(rulegen.ALERTS.glob("*.rules.yml"))
    assert [o["metadata"]["name"] for o in objs] == [
        f"runbook-exporter-{f.name.removesuffix('.rules.yml')}" for f in files
    ]
    for obj, f in zip(objs, files, strict=True):
        assert obj["spec"]["groups"] == yaml.safe_load(f.read_text())["groups"], f.name


def test_check_detects_a_hand_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alerts = tmp_path / "alerts"
    for name, text in render(Options(tests=True)).items():
        (alerts / name).parent.mkdir(parents=True, exist_ok=True)
        (alerts / name).write_text(text)
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "prometheusrule.yaml").write_text(
        render(Options(format="prometheusrule"))["prometheusrule.yaml"]
    )
    monkeypatch.setattr(rulegen, "ROOT", tmp_path)
    monkeypatch.setattr(rulegen, "ALERTS", alerts)
    monkeypatch.setattr(rulegen, "K8S", tmp_path / "k8s")
    assert rulegen.main(["--check"]) == 0
    queues = alerts / "queues.rules.yml"
    queues.write_text(queues.read_text().replace("for: 10m", "for: 11m", 1))
    (alerts / "old.rules.yml").write_text("groups: []\n")  # a group that no longer exists
    assert set(rulegen.stale()) == {queues, alerts / "old.rules.yml"}
    assert rulegen.main(["--check"]) == 1


def test_one_definition_per_alert_with_its_severities() -> None:
    defs = [r for g in GROUPS for r in g.rules if isinstance(r, Alert)]
    names = [a.name for a in defs]
    assert len(names) == len(set(names)), "an alert defined twice"
    assert sum(1 for a in defs if len(a.variants) > 1) >= 20  # warning + critical in one place
    for a in defs:  # the variants differ in severity (or, for the burn rates, in window)
        keys = [(v.severity, tuple(sorted(v.labels.items()))) for v in a.variants]
        assert len(keys) == len(set(keys)), a.name
    # and the render is one rule per variant, under the alert's one name
    rendered = [r for text in render().values() for r in rules_of(text) if "alert" in r]
    assert len(rendered) == sum(len(a.variants) for a in defs)
    assert {r["alert"] for r in rendered} == set(names)


# --- a render for another setup ----------------------------------------------------------------


def test_custom_render_is_what_was_asked(custom_dir: Path) -> None:
    assert not (custom_dir / "host.rules.yml").exists()
    assert not (custom_dir / "tests" / "host.test.yml").exists()
    alerts = [r for f in sorted(custom_dir.glob("*.rules.yml")) for r in rules_of(f.read_text())]
    alerts = [r for r in alerts if "alert" in r]
    default = [r for n, t in render().items() if n != "host.rules.yml" for r in rules_of(t)]
    assert len(alerts) == sum(1 for r in default if "alert" in r)  # all but the host group's
    for r in alerts:
        assert r["labels"]["team"] == "db", r["alert"]
        assert r["annotations"]["runbook_url"] == f"{WIKI}{r['alert']}.md"
        assert "runbook.*" not in r["expr"]
    down = next(r for r in alerts if r["alert"] == "RunbookExporterDown")
    assert 'up{job="pg-monitor"} == 0' in down["expr"]
    backlog = {r["labels"]["severity"]: r for r in alerts if r["alert"] == "QueueBacklogHigh"}
    assert backlog["warning"]["for"] == "20m" and backlog["critical"]["for"] == "5m"
    # the wording follows the for: it says
    assert "for 20 minutes" in backlog["warning"]["annotations"]["description"]
    assert "for 5 minutes" in backlog["critical"]["annotations"]["description"]


def test_custom_render_passes_promtool_check_and_its_rendered_unit_tests(
    custom_dir: Path,
) -> None:
    files = sorted(p.name for p in custom_dir.glob("*.rules.yml"))
    r = promtool("check", "rules", *files, cwd=custom_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(files) == 12
    tests = sorted(str(p.relative_to(custom_dir)) for p in custom_dir.glob("tests/*.test.yml"))
    assert len(tests) == 12
    r = promtool("test", "rules", *tests, cwd=custom_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(tests), r.stdout
    # the exporter's tests ran with the render's job: its series and expected labels
    exporter_tests = (custom_dir / "tests" / "exporter.test.yml").read_text()
    assert 'up{job="pg-monitor",instance="exporter:9883"}' in exporter_tests
    assert 'runbook-exporter"' not in exporter_tests
    # the overridden alert's shipped timing tests are left out, the others kept
    queue_tests = yaml.safe_load((custom_dir / "tests" / "queues.test.yml").read_text())
    names = {t["alertname"] for c in queue_tests["tests"] for t in c.get("alert_rule_test", [])}
    assert "QueueBacklogHigh" not in names and "QueueJobsStuck" in names


def unit_test(rule_file: str, series: list[dict[str, str]], checks: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(
        {
            "rule_files": [rule_file],
            "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
        }
    )


def test_exporter_down_under_another_job_name_quiet_while_up_fires_when_down(
    custom_dir: Path,
) -> None:
    """The issue's acceptance: with job pg-monitor (no "runbook" in it), RunbookExporterDown
    stays quiet while up{job="pg-monitor"} == 1 and pages when it is 0."""
    labels = {"severity": "critical", "team": "db", "job": "pg-monitor", "instance": "e:9883"}
    test = unit_test(
        "exporter.rules.yml",
        [{"series": 'up{job="pg-monitor",instance="e:9883"}', "values": "1x20 0x20"}],
        [
            {"eval_time": "20m", "alertname": "RunbookExporterDown", "exp_alerts": []},
            {"eval_time": "25m", "alertname": "RunbookExporterDown", "exp_alerts": []},
            {
                "eval_time": "26m",
                "alertname": "RunbookExporterDown",
                "exp_alerts": [
                    {
                        "exp_labels": labels,
                        "exp_annotations": {
                            "summary": "runbook-exporter e:9883 cannot be scraped",
                            "description": "Prometheus has failed to scrape e:9883 (job "
                            "pg-monitor) for 5 minutes. Every queue, database and endpoint alert "
                            "that relies on it is blind until it is back.",
                            "runbook_url": f"{WIKI}RunbookExporterDown.md",
                        },
                    }
                ],
            },
        ],
    )
    (custom_dir / "job.test.yml").write_text(test)
    r = promtool("test", "rules", "job.test.yml", cwd=custom_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    # the default render would page here forever: pg-monitor does not match .*runbook.*
    default = render()["exporter.rules.yml"]
    assert 'up{job=~".*runbook.*"}' in default


def test_for_override_changes_when_the_alert_fires(custom_dir: Path) -> None:
    labels = {
        "severity": "warning",
        "team": "db",
        "target": "app",
        "queue": "q",
        "status": "pending",
    }
    series = [
        {
            "series": 'runbook_queue_jobs{status="pending",target="app",queue="q"}',
            "values": "100x40",
        },
        {
            "series": 'runbook_queue_depth_threshold{target="app",queue="q",severity="warning"}',
            "values": "50x40",
        },
        {
            "series": 'runbook_queue_depth_threshold{target="app",queue="q",severity="critical"}',
            "values": "1000x40",
        },
    ]
    test = unit_test(
        "queues.rules.yml",
        series,
        [
            {"eval_time": "19m", "alertname": "QueueBacklogHigh", "exp_alerts": []},
            {
                "eval_time": "20m",
                "alertname": "QueueBacklogHigh",
                "exp_alerts": [
                    {
                        "exp_labels": labels,
                        "exp_annotations": {
                            "summary": "Queue q on app: 100 jobs pending",
                            # the text says the for: in effect
                            "description": "100 jobs wait in queue q of target app, above its "
                            "warning depth of 50 for 20 minutes: the workers are not keeping up.",
                            "runbook_url": f"{WIKI}QueueBacklogHigh.md",
                        },
                    }
                ],
            },
        ],
    )
    (custom_dir / "for.test.yml").write_text(test)
    r = promtool("test", "rules", "for.test.yml", cwd=custom_dir)
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheusrule_format_carries_the_options() -> None:
    text = render(
        Options(
            job_selector='job="pg-monitor"',
            extra_labels={"team": "db"},
            groups=["exporter"],
            format="prometheusrule",
        )
    )["prometheusrule.yaml"]
    (obj,) = yaml.safe_load_all(text)
    assert obj["kind"] == "PrometheusRule"
    rules = obj["spec"]["groups"][0]["rules"]
    assert all(r["labels"]["team"] == "db" for r in rules)
    assert 'absent(up{job="pg-monitor"})' in rules[0]["expr"]


def test_stdout_is_one_rule_file_promtool_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["rules", "--exclude-groups", "host,slo"]) == 0
    out = capsys.readouterr().out
    (tmp_path / "all.rules.yml").write_text(out)
    assert len(yaml.safe_load(out)["groups"]) == 11
    r = promtool("check", "rules", "all.rules.yml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_check_compares_an_output_dir(tmp_path: Path) -> None:
    args = ["rules", "--output", str(tmp_path), "--job", "pg-monitor"]
    assert cli.main([*args, "--check"]) == 1  # nothing written yet
    assert cli.main(args) == 0
    assert cli.main([*args, "--check"]) == 0
    assert cli.main(["rules", "--output", str(tmp_path), "--check"]) == 1  # another job


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--for", "QueueBaclogHigh=5m"],
            "no alert 'QueueBaclogHigh' (did you mean QueueBacklogHigh?)",
        ),
        (["--for", "QueueBacklogHigh=5 minutes"], "is not a Prometheus duration"),
        (["--for", "QueueJobsStuck:critical=5m"], "QueueJobsStuck has no severity 'critical'"),
        (["--for", "HostCpuHigh=5m", "--exclude-groups", "host"], "in a group left out"),
        (["--for", "QueueBacklogHigh"], "'QueueBacklogHigh' is not NAME=VALUE"),
        (["--label", "severity=x"], "severity is set by the rules themselves"),
        (["--label", "team-name=x"], "'team-name' is not a label name"),
        (["--job-selector", "job~runbook"], "is not a list of label matchers"),
        (["--job", ""], "the job name is empty"),
        (["--groups", "queues,nope"], "no group 'nope'; the groups are app-pool,"),
        (["--runbook-url-base", "wiki/runbooks"], "is not a URL"),
        (["--tests"], "need --output DIR"),
        (["--format", "prometheusrule", "--tests", "--output", "x"], "run on rule files"),
        (["--job-selector", 'job=~"pg-.*"', "--tests", "--output", "x"], "use --job NAME"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["rules", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_options_api_raises_a_clear_error() -> None:
    with pytest.raises(RulesOptionError, match="--exclude-groups: that leaves no group"):
        render(Options(groups=["host"], exclude_groups=["host"]))
    with pytest.raises(RulesOptionError, match="a list of names, not one string"):
        render(Options(groups="host"))
    assert render(
        Options(runbook_url_base="https://wiki.example.com/{alert}", groups=["retention"])
    )
    text = render(Options(runbook_url_base="https://wiki.example.com/x?page={alert}"))
    assert "https://wiki.example.com/x?page=QueueBacklogHigh\n" in text["queues.rules.yml"]
    assert RUNBOOK_URL_BASE in render()["queues.rules.yml"]
