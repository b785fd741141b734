"""bench/compare/statements_series.py's pure parts: the per-statement series count and the
postgres_exporter query file it writes (every selected column declared once). The bench
itself is run by hand (docs/benchmarks.md), not as a test."""

from __future__ import annotations

import re

from bench.compare.statements_series import PGX_FAMILY, PGX_STATEMENT_QUERIES, family_series

BODY = """# HELP pg_stat_statements_calls Executions
# TYPE pg_stat_statements_calls counter
pg_stat_statements_calls{datname="bench",queryid="1",rolname="app"} 3
pg_stat_statements_calls{datname="bench",queryid="2",rolname="app"} 1

pg_stat_statements_rows{datname="bench",queryid="1",rolname="app"} 30
pg_up 1
"""


def test_family_series_counts_only_the_family_samples():
    assert family_series(BODY, f"{PGX_FAMILY}_") == 3
    assert family_series(BODY, "pg_up") == 1
    assert family_series(BODY, "runbook_") == 0


def test_query_file_declares_each_selected_column():
    entry = PGX_STATEMENT_QUERIES[PGX_FAMILY]
    select = entry["query"].split(" FROM pg_stat_statements")[0].removeprefix("SELECT ")
    selected = [re.split(r"\.| AS ", col.strip())[-1] for col in select.split(", ")]
    declared = [next(iter(m)) for m in entry["metrics"]]
    assert selected == declared
    assert [m for m in entry["metrics"] if next(iter(m.values()))["usage"] == "LABEL"] == [
        {"rolname": {"usage": "LABEL", "description": "Role"}},
        {"datname": {"usage": "LABEL", "description": "Database"}},
        {"queryid": {"usage": "LABEL", "description": "Query id"}},
    ]
