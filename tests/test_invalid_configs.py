"""Every file in tests/configs/invalid/ is refused with a located error, exit 2, no traceback.

Each NAME.yml (raw bytes: some are Latin-1, UTF-16 or hold NUL bytes) has a NAME.expected:
lines that must all appear in stderr, `{file}` standing for the config's path, and directives:
`# start` (the check runs as the exporter starts, where every environment variable and file
the config names must exist; --check-config only warns about missing secrets), `# env K=V`
(set for the run), `# secret S` (S must appear nowhere in the output).

All cases run in-process through the CLI's loader (cli._load, what main() calls); a handful also
run as real processes (`python -m exporter`), both to --check-config and to a start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from exporter import cli

INVALID = Path(__file__).resolve().parent / "configs" / "invalid"
CASES = sorted(INVALID.glob("*.yml"))


@dataclass
class Case:
    path: Path
    start: bool = False
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)


def read_case(path: Path) -> Case:
    case = Case(path)
    for line in path.with_suffix(".expected").read_text().splitlines():
        if line == "# start":
            case.start = True
        elif line.startswith("# env "):
            key, _, value = line.removeprefix("# env ").partition("=")
            case.env[key] = value
        elif line.startswith("# secret "):
            case.secrets.append(line.removeprefix("# secret "))
        elif line.strip():
            case.expected.append(line.replace("{file}", str(path)))
    assert case.expected, f"{path.name}: no expected text"
    return case


def check_output(case: Case, code: int | None, out: str, err: str) -> None:
    assert code == 2, f"{case.path.name}: exit {code}\n{out}{err}"
    assert "Traceback" not in out + err
    assert err.startswith("error: "), err
    for text in case.expected:
        assert text in err, f"{case.path.name}: {text!r} not in\n{err}"
    for secret in case.secrets:
        assert secret not in out + err


def test_there_are_enough_cases():
    assert len(CASES) >= 40
    assert all(p.with_suffix(".expected").exists() for p in CASES)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_invalid_config_is_a_located_error(path, capsys, monkeypatch):
    case = read_case(path)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as e:
        cli._load(str(path), check_only=not case.start)
    out, err = capsys.readouterr()
    check_output(case, e.value.code, out, err)


def test_secret_sources_only_warn_in_check_config(capsys, monkeypatch):
    """--check-config may run where the secrets are not mounted: it says what is missing and
    passes; the start (above, `# start` cases) refuses."""
    monkeypatch.delenv("RUNBOOK_TEST_UNSET_PASSWORD", raising=False)
    config = cli._load(str(INVALID / "password_env_unset.yml"), check_only=True)
    _, err = capsys.readouterr()
    assert config.targets[0].password_env == "RUNBOOK_TEST_UNSET_PASSWORD"
    assert "warning: " in err and "RUNBOOK_TEST_UNSET_PASSWORD is not set" in err
    assert "the exporter will not start without it" in err


# through the real command line: check-config and start, in parallel to keep it quick
SUBPROCESS = [
    "latin1",
    "utf16_bom",
    "duplicate_targets",
    "alias_bomb",
    "collector_interval_zero",
    "secret_under_unknown_key",
    "tls_ca_file_missing",
    "dsn_env_unset",
    "dsn_env_unparseable",
]


@pytest.mark.slow
def test_real_command_line():
    procs = []
    for name in SUBPROCESS:
        case = read_case(INVALID / f"{name}.yml")
        args = [sys.executable, "-m", "exporter", f"--config.file={case.path}"]
        # a start that wrongly passed would serve: on a free port, and the timeout ends it
        args += ["--web.listen-address=127.0.0.1:0"] if case.start else ["--check-config"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_TEST_")}
        procs.append(
            (
                case,
                subprocess.Popen(
                    args,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**env, **case.env},
                ),
            )
        )
    for case, proc in procs:
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        check_output(case, proc.returncode, out, err)
