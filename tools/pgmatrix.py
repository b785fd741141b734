"""The version matrix's results as Markdown tables, from the JUnit XML files that
scripts/test-postgres-versions.sh writes (.pg/results/<major>.xml):

    python -m tools.pgmatrix .pg/results 13 14 15 16 17 18

Table 1: version x collector, from tests/test_pg_versions.py (every collector through the real
exporter on that major). Table 2: version x test file, passed/total (skips shown apart).
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

COLLECTOR_TEST = re.compile(r"test_collector_on_this_major\[(\w+)\]")


def outcome(case: ET.Element) -> str:
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    if case.find("skipped") is not None:
        return "skipped"
    return "passed"


def read(path: Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """({collector: outcome}, {test file: {outcome: count}}) of one major's run."""
    collectors: dict[str, str] = {}
    files: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for case in ET.parse(path).iter("testcase"):
        result = outcome(case)
        module = case.get("classname", "").split(".")
        name = module[1] if len(module) > 1 else module[0]
        files[name][result] += 1
        m = COLLECTOR_TEST.fullmatch(case.get("name", ""))
        if m:
            collectors[m.group(1)] = result
    return collectors, files


def cell_collector(result: str | None) -> str:
    return {"passed": "ok", None: "not run"}.get(result, result or "")


def cell_file(counts: dict[str, int] | None) -> str:
    if not counts:
        return "not run"
    total = sum(counts.values())
    text = f"{counts.get('passed', 0)}/{total}"
    if counts.get("failed"):
        text += f" ({counts['failed']} FAILED)"
    if counts.get("skipped"):
        text += f" ({counts['skipped']} skipped)"
    return text


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    results, majors = Path(argv[0]), argv[1:]
    runs = {m: read(results / f"{m}.xml") for m in majors if (results / f"{m}.xml").exists()}
    collectors = sorted({c for cs, _ in runs.values() for c in cs})
    files = sorted({f for _, fs in runs.values() for f in fs})
    print(
        table(
            ["PostgreSQL", *collectors],
            [
                [m, *(cell_collector(runs.get(m, ({}, {}))[0].get(c)) for c in collectors)]
                for m in majors
            ],
        )
    )
    print()
    print(
        table(
            ["test file", *majors],
            [[f, *(cell_file(runs.get(m, ({}, {}))[1].get(f)) for m in majors)] for f in files],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
