"""Series per scrape with many pg_stat_statements entries (issue 18): runbook-exporter keeps
the top N statements (top_n, default 20), postgres_exporter 0.11.1 has no statements collector
of its own, so users add a pg_stat_statements query to its --extend.query-path file, one
series per entry and column.

    .venv/bin/python -m bench.compare.statements_series      # about a minute on 2 cores

What runs, all on 127.0.0.1: Debian's PostgreSQL 15 as bench/compare starts it, a small jobs
table (runbook-exporter's bench/compare configuration has the queue), a table with COLUMNS
columns and an app role that runs `SELECT cI, cJ FROM stmt_source` for distinct column
pairs until it has --statements entries in pg_stat_statements; then both exporters start
(so runbook-exporter's statements collector reads the view after the workload) and each is
scraped --scrapes times, one at a time: series (non-comment lines), body bytes, bytes on the
wire with gzip accepted, scrape time (median). Results go under the "statements_series" key
of bench/results.json and into docs/benchmarks.md's block.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from bench.compare import configs, dataset, procs
from bench.compare.run import complete_runbook
from bench.docblock import write_block
from exporter import __version__
from exporter.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- statements-series:start -->", "<!-- statements-series:end -->"
HEADING = "### Series per scrape with 2,005 pg_stat_statements entries"
KEY = "statements_series"
APP_ROLE = "bench_app"
SOURCE = "stmt_source"
COLUMNS = 64  # 64 * 63 ordered pairs: room for 4,032 distinct statements
JOBS_ROWS = 2000
OURS, PGX = "runbook-exporter", "postgres_exporter + pg_stat_statements query"
PGX_FAMILY = "pg_stat_statements"

# A postgres_exporter user's per-statement query (what its --extend.query-path file holds for
# pg_stat_statements): role, database and queryid as labels, a series per counter column.
# Column names are PostgreSQL 13+'s (total_exec_time, ...), times converted to seconds.
_VALUES = {
    "calls": ("COUNTER", "calls", "Executions"),
    "exec_seconds_total": ("COUNTER", "total_exec_time / 1000", "Execution time"),
    "exec_seconds_min": ("GAUGE", "min_exec_time / 1000", "Shortest execution"),
    "exec_seconds_max": ("GAUGE", "max_exec_time / 1000", "Longest execution"),
    "exec_seconds_mean": ("GAUGE", "mean_exec_time / 1000", "Mean execution time"),
    "exec_seconds_stddev": ("GAUGE", "stddev_exec_time / 1000", "Execution time stddev"),
    "rows": ("COUNTER", "rows", "Rows returned or affected"),
    **{
        f"{kind}_blks_{what}": ("COUNTER", f"{kind}_blks_{what}", f"{kind} blocks {what}")
        for kind in ("shared", "local")
        for what in ("hit", "read", "dirtied", "written")
    },
    "temp_blks_read": ("COUNTER", "temp_blks_read", "Temp blocks read"),
    "temp_blks_written": ("COUNTER", "temp_blks_written", "Temp blocks written"),
    "blk_read_seconds": ("COUNTER", "blk_read_time / 1000", "Time reading blocks"),
    "blk_write_seconds": ("COUNTER", "blk_write_time / 1000", "Time writing blocks"),
}
PGX_STATEMENT_QUERIES = {
    PGX_FAMILY: {
        "query": "SELECT r.rolname, d.datname, s.queryid, "
        + ", ".join(f"{expr} AS {name}" for name, (_, expr, _) in _VALUES.items())
        + " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
        " JOIN pg_database d ON d.oid = s.dbid",
        "master": True,
        "metrics": [
            {"rolname": {"usage": "LABEL", "description": "Role"}},
            {"datname": {"usage": "LABEL", "description": "Database"}},
            {"queryid": {"usage": "LABEL", "description": "Query id"}},
            *(
                {name: {"usage": usage, "description": text}}
                for name, (usage, _, text) in _VALUES.items()
            ),
        ],
    }
}


def family_series(body: str, prefix: str) -> int:
    """Series (non-comment lines) whose metric name starts with `prefix`."""
    return sum(
        1 for line in body.splitlines() if line.startswith(prefix) and not line.startswith("#")
    )


def prepare(server: dataset.Server) -> None:
    """The small jobs table, the statements' source table and the app role."""
    dataset.build_jobs(server, JOBS_ROWS)
    with psycopg.connect(server.admin, autocommit=True) as c:
        cols = ", ".join(f"c{i} int" for i in range(COLUMNS))
        c.execute(f"CREATE TABLE {SOURCE} ({cols})")
        c.execute(f"INSERT INTO {SOURCE} SELECT {', '.join(['g'] * COLUMNS)}"
                  " FROM generate_series(1, 10) g")  # fmt: skip
        c.execute(f"ANALYZE {SOURCE}")
        c.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
        c.execute(f"GRANT SELECT ON {SOURCE} TO {APP_ROLE}")


def entries(server: dataset.Server) -> dict[str, int]:
    with psycopg.connect(server.admin, autocommit=True) as c:
        (total, app) = c.execute(
            "SELECT count(*), count(*) FILTER (WHERE r.rolname = %s)"
            " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid",
            (APP_ROLE,),
        ).fetchone()
    return {"total": total, "app_role": app}


def run_workload(server: dataset.Server, n: int) -> float:
    """n distinct statements as the app role (each column pair is its own queryid)."""
    pairs = itertools.islice(itertools.permutations(range(COLUMNS), 2), n)
    started = time.perf_counter()
    with psycopg.connect(server.dsn(APP_ROLE), autocommit=True) as c:
        for i, j in pairs:
            c.execute(f"SELECT c{i}, c{j} FROM {SOURCE}", prepare=False).fetchall()
    return time.perf_counter() - started


def scrape(p: procs.Proc, times: int) -> dict:
    """`times` scrapes one after another (gzip accepted, as Prometheus does)."""
    ms: list[float] = []
    with httpx.Client(timeout=60, headers={"Accept-Encoding": "gzip"}) as client:
        for _ in range(times):
            started = time.perf_counter()
            r = client.get(p.metrics_url)
            r.raise_for_status()
            r.read()
            ms.append((time.perf_counter() - started) * 1000)
            wire = r.num_bytes_downloaded
            body = r.text
    return {
        "series": procs.samples(body),
        "body_bytes": len(body.encode()),
        "wire_bytes": wire,
        "gzip": r.headers.get("content-encoding") == "gzip",
        "scrape_ms_median": round(statistics.median(ms), 2),
        "scrape_ms_max": round(max(ms), 2),
        "body": body,
    }


def measure(opts: argparse.Namespace) -> dict:
    for tool in ("prometheus-postgres-exporter",):
        procs.need(tool)
    workdir = Path(tempfile.mkdtemp(prefix="bench-statements-"))
    out: dict = {
        "command": opts.command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": [round(x, 1) for x in os.getloadavg()],
        "versions": {
            "runbook-exporter": __version__,
            "postgres_exporter": procs.version("prometheus-postgres-exporter"),
        },
    }
    server = dataset.start()
    out["versions"]["postgresql"] = server.version
    try:
        prepare(server)
        dataset.reset_statements(server)
        out["workload_seconds"] = round(run_workload(server, opts.statements), 1)
        out["entries_before_exporters"] = entries(server)
        if out["entries_before_exporters"]["app_role"] != opts.statements:
            raise SystemExit(f"pg_stat_statements holds {out['entries_before_exporters']}, "
                             f"not {opts.statements} entries of {APP_ROLE}")  # fmt: skip
        cfg = configs.write(
            workdir / "runbook.yml",
            configs.runbook_main(server.dsn(dataset.ROLES["runbook-exporter"]), 15.0),
        )
        target = parse_config(cfg.read_text(), str(cfg)).targets[0]
        out["top_n"] = dict(target.enabled_collectors())["statements"].top_n
        queries = configs.write(workdir / "queries.yaml", PGX_STATEMENT_QUERIES)
        ours = procs.runbook(OURS, cfg, workdir)
        pgx = procs.postgres_exporter(
            PGX, server.dsn(dataset.ROLES["postgres_exporter"]), workdir, queries
        )
        expected = {name for name, _ in target.enabled_collectors()}
        try:
            ours.wait_complete(complete_runbook(expected, set()))
            pgx.wait_complete(lambda body: f"\n{PGX_FAMILY}_calls{{" in body)
            out["by"] = {p.name: scrape(p, opts.scrapes) for p in (ours, pgx)}
            for p in (ours, pgx):
                p.alive()
                out["by"][p.name]["rss_mib"] = round(p.rss(), 1)
        finally:
            ours.stop()
            pgx.stop()
        out["entries_after_scrapes"] = entries(server)
    finally:
        server.pg.cleanup()
    ours_body = out["by"][OURS].pop("body")
    pgx_body = out["by"][PGX].pop("body")
    out["by"][OURS]["statement_series"] = family_series(ours_body, "runbook_pg_statement")
    out["by"][PGX]["statement_series"] = family_series(pgx_body, f"{PGX_FAMILY}_")
    out["value_columns"] = len(_VALUES)
    out["scrapes"] = opts.scrapes
    out["statements"] = opts.statements
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3g}x" if b else ""


def render(r: dict) -> str:
    ours, pgx = r["by"][OURS], r["by"][PGX]
    v = r["versions"]
    rows = [
        ("series per scrape", "series", "{:,}"),
        ("of them per-statement series", "statement_series", "{:,}"),
        ("/metrics body, bytes", "body_bytes", "{:,}"),
        ("/metrics on the wire with gzip, bytes", "wire_bytes", "{:,}"),
        ("scrape time, median ms", "scrape_ms_median", "{:g}"),
        ("scrape time, max ms", "scrape_ms_max", "{:g}"),
        ("RSS after the scrapes, MiB", "rss_mib", "{:g}"),
    ]
    lines = [
        START,
        "",
        f"Measured on {r['date']} with `{r['command']}`: runbook-exporter {v['runbook-exporter']} "
        f"(statements top_n {r['top_n']}, the default), postgres_exporter "
        f"{v['postgres_exporter']} (Debian package) with the pg_stat_statements query above "
        f"({r['value_columns']} value columns per entry), PostgreSQL {v['postgresql']}. "
        f"pg_stat_statements held {r['entries_before_exporters']['app_role']:,} entries of the "
        f"app role and {r['entries_after_scrapes']['total']:,} in all after the scrapes "
        f"(the exporters' own statements and the bench's); {r['scrapes']} scrapes each, one "
        f"at a time; load average {', '.join(map(str, r['load_average_start']))} at the start "
        "(2 cores shared with other work: the times move between runs, the counts do not).",
        "",
        f"| figure | {OURS} | {PGX} | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, key, fmt in rows:
        lines.append(
            f"| {label} | {fmt.format(ours[key])} | {fmt.format(pgx[key])} | "
            f"{_ratio(ours[key], pgx[key])} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def save(r: dict, output: Path) -> None:
    """Under KEY in the results file, leaving its other keys as they are."""
    results = json.loads(output.read_text()) if output.exists() else {}
    results[KEY] = r
    output.write_text(json.dumps(results, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.compare.statements_series", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--statements", type=int, default=2005, help="distinct app statements")
    ap.add_argument("--scrapes", type=int, default=5, help="scrapes of each exporter")
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    ap.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md alone")
    opts = ap.parse_args(argv)
    if not 1 <= opts.statements <= COLUMNS * (COLUMNS - 1):
        ap.error(f"--statements must be 1..{COLUMNS * (COLUMNS - 1)}")
    if not 1 <= opts.scrapes <= 100:
        ap.error("--scrapes must be 1..100")
    args = argv if argv is not None else sys.argv[1:]
    opts.command = " ".join(["python -m bench.compare.statements_series", *args])
    r = measure(opts)
    save(r, opts.output)
    block = render(r)
    print(block)
    if not opts.no_doc:
        write_block(DOC, START, END, block, HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
