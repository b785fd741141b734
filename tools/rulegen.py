"""Write the default render of the alert rules (exporter/rules/) into the repository.

    python -m tools.rulegen            # alerts/*.rules.yml, alerts/tests/, prometheusrule.yaml
    python -m tools.rulegen --check    # exit 1 when one of them is stale

The definitions in exporter/rules/groups/ are the source; these checked-in copies are
`runbook-exporter rules` with its defaults, for a git checkout and the Kubernetes manifests.
tests/test_rules.py fails when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from exporter.rules import Options, render
from exporter.rules.cli import stale_files, write_files

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts"
K8S = ROOT / "deploy" / "kubernetes"


def renders() -> list[tuple[Path, dict[str, str]]]:
    """(directory, files) of every checked-in default render."""
    return [
        (ALERTS, render(Options(tests=True))),
        (K8S, render(Options(format="prometheusrule"))),
    ]


def stale() -> list[Path]:
    out = []
    for where, files in renders():
        out += [where / n for n in stale_files(files, where)]
    # a rule file or test left behind by a group that no longer exists
    known = set(renders()[0][1])
    for path in [*ALERTS.glob("*.rules.yml"), *ALERTS.glob("tests/*.test.yml")]:
        if str(path.relative_to(ALERTS)) not in known:
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        for path in stale():
            print(f"{path.relative_to(ROOT)} is stale: run python -m tools.rulegen")
        return 1 if stale() else 0
    if args:
        print("usage: python -m tools.rulegen [--check]")
        return 2
    for where, files in renders():
        write_files(files, where)
        print(f"wrote {len(files)} files to {where.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
