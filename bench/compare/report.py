"""The figures of a bench/compare run against the issue's targets (ratio to each anchor, met
or missed), as a table for the terminal and the measured block of docs/benchmarks.md."""

from __future__ import annotations

import math
from pathlib import Path

from bench.docblock import write_block

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- compare:start -->", "<!-- compare:end -->"
HEADING = "## Side by side with postgres_exporter and blackbox_exporter"
OURS, PGX, PGXQ, BB = (
    "runbook-exporter",
    "postgres_exporter",
    "postgres_exporter + queue SQL",
    "blackbox_exporter",
)
MB_PER_MIB = 1.048576


def _ratio(ours: float, anchor: float) -> float:
    return ours / anchor if anchor and not math.isnan(anchor) else float("nan")


def row(figure, ours, unit, anchor_name, anchor, target=None, met=None) -> dict:
    return {
        "figure": figure,
        "ours": ours,
        "unit": unit,
        "anchor": anchor_name,
        "anchor_value": anchor,
        "ratio": _ratio(ours, anchor) if anchor is not None else None,
        "target": target,
        "met": met,
    }


def _best(c: dict, prefix: str = "") -> float:
    """A collector's best run (older results files have the median only)."""
    key = f"{prefix}_" if prefix else ""
    return c.get(f"{key}min_ms", c[f"{key}ms"])


def summarize(r: dict) -> list[dict]:
    sizes = sorted(r["sizes"], key=int)
    small, large = sizes[0], sizes[-1]
    big = r["sizes"][large]
    by = big["exporters"]["by"]
    out: list[dict] = []
    rows = f"{int(large):,} rows"
    ours1, pgx1 = by[OURS]["wrk_c1"]["p50_ms"], by[PGX]["wrk_c1"]["p50_ms"]
    out.append(row(f"/metrics median, 1 client, {rows}", ours1, "ms", PGX, pgx1,
                   "≤ 0.2x", _ratio(ours1, pgx1) <= 0.2))  # fmt: skip
    out.append(row(f"/metrics median, 1 client, {rows}", ours1, "ms", PGXQ,
                   by[PGXQ]["wrk_c1"]["p50_ms"]))  # fmt: skip
    out.append(row(f"/metrics p99, 1 client, {rows}", by[OURS]["wrk_c1"]["p99_ms"], "ms", PGX,
                   by[PGX]["wrk_c1"]["p99_ms"]))  # fmt: skip
    if "wrk_c1_new_connections" in by[OURS]:
        fresh = by[OURS]["wrk_c1_new_connections"]["p50_ms"]
        out.append(row(f"/metrics median, 1 client, a new connection per scrape, {rows}", fresh,
                       "ms", PGX, pgx1))  # fmt: skip
    bb = r["probes"][BB]
    rps = by[OURS]["wrk_c200"]["rps"]
    out.append(row("/metrics throughput, 200 clients", rps, "req/s", BB, bb["wrk_c200"]["rps"],
                   "≥ 1x", rps >= bb["wrk_c200"]["rps"]))  # fmt: skip
    out.append(row("/metrics throughput, 200 clients", rps, "req/s", PGX,
                   by[PGX]["wrk_c200"]["rps"]))  # fmt: skip
    out.append(row("/metrics p99, 200 clients", by[OURS]["wrk_c200"]["p99_ms"], "ms", BB,
                   bb["wrk_c200"]["p99_ms"]))  # fmt: skip
    out.append(row("series per scrape", by[OURS]["series"], "", PGX, by[PGX]["series"]))
    # best of the timed runs (see collectors.py): the median at 100k moves with the machine
    q_large = _best(big["collectors"]["doctor's indexes"]["queues"])
    q_small = _best(r["sizes"][small]["collectors"]["doctor's indexes"]["queues"])
    out.append(row(f"queue collector, doctor's indexes, {rows} vs {int(small):,} (best run)",
                   q_large, "ms", f"itself at {int(small):,} rows", q_small, "≤ 1.5x",
                   q_large <= 1.5 * q_small))  # fmt: skip
    q_before = big["collectors"]["primary key only"]["queues"]["ms"]
    q_large = big["collectors"]["doctor's indexes"]["queues"]["ms"]
    out.append(row(f"queue collector, {rows}, doctor's indexes vs primary key only", q_large,
                   "ms", "primary key only", q_before))  # fmt: skip
    for n in (small, large):
        timed = r["sizes"][n]["collectors"]["doctor's indexes"]
        q, at = timed["queues"], f"{int(n):,} rows (best run)"
        out.append(row(f"queue collector vs its raw SQL, {at}", _best(q), "ms", "raw SQL",
                       _best(q, "raw_sql"), "≤ 1.1x",
                       _best(q) <= 1.1 * _best(q, "raw_sql")))  # fmt: skip
        # every collector that sends SQL, one run each summed: steadier than each small one
        sending = [c for c in timed.values() if c.get("statements")]
        ours_all = sum(_best(c) for c in sending)
        raw_all = sum(_best(c, "raw_sql") for c in sending)
        out.append(row(f"all {len(sending)} collectors vs their raw SQL, {at}", ours_all, "ms",
                       "raw SQL", raw_all, "≤ 1.1x", ours_all <= 1.1 * raw_all))  # fmt: skip
    db_ours = by[OURS]["pg_ms_per_min"]
    out.append(row(f"PostgreSQL time per minute, {rows}", db_ours, "ms", PGXQ,
                   by[PGXQ]["pg_ms_per_min"], "≤ 0.05x",
                   db_ours <= 0.05 * by[PGXQ]["pg_ms_per_min"]))  # fmt: skip
    out.append(row(f"PostgreSQL time per minute, {rows}", db_ours, "ms", PGX,
                   by[PGX]["pg_ms_per_min"]))  # fmt: skip
    out.append(row(f"PostgreSQL calls per minute, {rows}", by[OURS]["pg_calls_per_min"], "", PGX,
                   by[PGX]["pg_calls_per_min"]))  # fmt: skip
    ours_p = r["probes"][OURS]
    for stat in ("median_ms", "p99_ms"):
        o, a = ours_p["error"][stat], bb["error"][stat]
        out.append(row(f"probe error (reported - true), {stat[:-3]}, 200 ms endpoint", o, "ms",
                       BB, a, "≤ 1x", o <= a))  # fmt: skip
    out.append(row("refused port: reported duration, median", ours_p["refused"]["median_ms"],
                   "ms", BB, bb["refused"]["median_ms"]))  # fmt: skip
    out.append(row("CPU per probe", ours_p["cpu_ms_per_probe"], "ms", BB,
                   bb["cpu_ms_per_probe"]))  # fmt: skip
    rss = ours_p["rss_mib"]
    anchors = by[PGX]["rss_mib"] + bb["rss_mib"]
    out.append(row("RSS, 3 targets, 5 queues, 50 endpoints", rss, "MiB",
                   f"{PGX} + {BB}", anchors, "≤ 60 MB", rss * MB_PER_MIB <= 60))  # fmt: skip
    out.append(row(f"CPU per minute, {rows}", by[OURS]["cpu_s_per_min"], "s", PGX,
                   by[PGX]["cpu_s_per_min"]))  # fmt: skip
    out.append(row("start to first complete /metrics", by[OURS]["start_to_complete_s"], "s",
                   PGX, by[PGX]["start_to_complete_s"]))  # fmt: skip
    return out


def _num(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    if isinstance(x, int) or (isinstance(x, float) and x >= 100):
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def _met(m) -> str:
    return "" if m is None else ("met" if m else "**missed**")


def table(r: dict) -> str:
    lines = [
        "| figure | runbook-exporter | anchor | anchor's | ratio | target | |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for x in r["summary"]:
        unit = f" {x['unit']}" if x["unit"] else ""
        ratio = f"{x['ratio']:.3g}x" if x["ratio"] is not None else ""
        lines.append(
            f"| {x['figure']} | {_num(x['ours'])}{unit} | {x['anchor']} |"
            f" {_num(x['anchor_value'])}{unit} | {ratio} | {x['target'] or ''} | {_met(x['met'])} |"
        )
    return "\n".join(lines)


def exporters_table(r: dict) -> str:
    lines = [
        "| rows | exporter | start to complete s | series | median ms 1 client | p99 |"
        " req/s 200 clients | p99 ms | errors | PG calls/min | PG ms/min | CPU s/min | RSS MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, size in sorted(r["sizes"].items(), key=lambda kv: int(kv[0])):
        for name, e in size["exporters"]["by"].items():
            c1, c200 = e["wrk_c1"], e["wrk_c200"]
            lines.append(
                f"| {int(n):,} | {name} | {_num(e['start_to_complete_s'])} | {e['series']} |"
                f" {_num(c1['p50_ms'])} | {_num(c1['p99_ms'])} | {_num(c200['rps'])} |"
                f" {_num(c200['p99_ms'])} | {c200['errors']:.0f} | {_num(e['pg_calls_per_min'])} |"
                f" {_num(e['pg_ms_per_min'])} | {_num(e['cpu_s_per_min'])} | {e['rss_mib']} |"
            )
    p = r["probes"]
    for name in (OURS, BB):
        e = p[name]
        c1, c200 = e["wrk_c1"], e["wrk_c200"]
        label = f"{name} (3 targets, 5 queues, 50 endpoints)" if name == OURS else name
        lines.append(
            f"| probes | {label} | {_num(e['start_to_complete_s'])} | {e['series']} |"
            f" {_num(c1['p50_ms'])} | {_num(c1['p99_ms'])} | {_num(c200['rps'])} |"
            f" {_num(c200['p99_ms'])} | {c200['errors']:.0f} | | | {_num(e.get('cpu_s_per_min'))} |"
            f" {e['rss_mib']} |"
        )
    return "\n".join(lines)


def collectors_table(r: dict) -> str:
    lines = [
        "| rows | indexes | collector | run ms | raw SQL ms | overhead (best runs) | statements |"
        " reported by the running exporter, ms |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for n, size in sorted(r["sizes"].items(), key=lambda kv: int(kv[0])):
        reported = size["exporters"]["by"][OURS].get("self_reported_ms", {})
        for setup, cs in size["collectors"].items():
            for name, c in cs.items():
                if "ms" not in c:
                    lines.append(f"| {int(n):,} | {setup} | {name} | failed: {c['error']} |||||")
                    continue
                own = _num(reported.get(name)) if setup == "doctor's indexes" else ""
                lines.append(
                    f"| {int(n):,} | {setup} | {name} | {_num(c['ms'])} | {_num(c['raw_sql_ms'])}"
                    f" | {c['overhead']:+.0%} | {c['statements']} | {own} |"
                )
    return "\n".join(lines)


def explain_table(r: dict) -> str:
    lines = [
        "| rows | indexes | statement | plan | buffers | ms |",
        "|---:|---|---|---|---:|---:|",
    ]
    for n, size in sorted(r["sizes"].items(), key=lambda kv: int(kv[0])):
        for setup, cs in size["collectors"].items():
            for e in cs.get("queues", {}).get("explain", []):
                sql = e["sql"].replace("|", "\\|")[:90]
                lines.append(
                    f"| {int(n):,} | {setup} | `{sql}…` | {e['plan']} | {e['buffers']:,} |"
                    f" {_num(e.get('ms'))} |"
                )
    return "\n".join(lines)


def render(r: dict) -> str:
    m, v = r["machine"], r["versions"]
    sizes = sorted(r["sizes"], key=int)
    tables = "; ".join(
        f"{int(n):,} rows: "
        + ", ".join(f"{k} {c:,}" for k, c in r["sizes"][n]["table"]["counts"].items())
        + f" ({r['sizes'][n]['table']['table_bytes'] / 2**20:,.0f} MiB)"
        for n in sizes
    )
    indexes = r["sizes"][sizes[-1]]["doctor_indexes"]
    p = r["probes"]
    la0 = ", ".join(f"{x:.1f}" for x in r["load_average_start"])
    la1 = ", ".join(f"{x:.1f}" for x in r["load_average_end"])
    return "\n".join(
        [
            START,
            "",
            f"Measured on {r['date']} with `{r['command'].strip()}`: {m['cpu']}, {m['cores']}"
            f" cores, {m['memory_gib']} GiB, Debian {m['os']}; load average {la0} at the start"
            f" and {la1} at the end (other work shared the machine: single figures move"
            " between runs, ratios less). Versions: runbook-exporter"
            f" {v['runbook-exporter']} (Python {v['python']}, psycopg {v['psycopg']}),"
            f" PostgreSQL {v['postgresql']}, postgres_exporter"
            f" {v['prometheus-postgres-exporter']} and blackbox_exporter"
            f" {v['prometheus-blackbox-exporter']} (Debian packages), wrk {v['wrk']}.",
            "",
            f"Jobs tables: {tables}. The doctor's indexes: "
            + "; ".join(f"`{s}`" for s in indexes)
            + ".",
            "",
            table(r),
            "",
            "Each exporter in the same run (wrk: one thread, keep-alive, gzip accepted; load"
            f" window of {r['sizes'][sizes[-1]]['exporters']['window_s']:g} s scraped every"
            f" {r['sizes'][sizes[-1]]['exporters']['scrape_interval_s']:g} s, PostgreSQL"
            " figures from pg_stat_statements by the exporter's role, planning + execution):",
            "",
            exporters_table(r),
            "",
            "Each collector's run (the exporter's session and transaction, medians) and the raw"
            " SQL it sent replayed on a plain connection in one read-only transaction; the last"
            " column is `runbook_collector_duration_seconds` of the running exporter's last run"
            " in the load window (one run, so noisier; it also counts any wait for the target's"
            " connection):",
            "",
            collectors_table(r),
            "",
            "The queue collector's statements, EXPLAIN (ANALYZE, BUFFERS):",
            "",
            explain_table(r),
            "",
            f"Probes: {p['endpoints'] - 1} endpoints answering after {p['delay_ms']:g} ms and"
            f" one refused port, each probed every {p['every_s']:g} s by both exporters for"
            f" {p['window_s']:g} s ({p[OURS]['error']['n']} and {p[BB]['error']['n']} samples);"
            f" the server answered {p['server_late_ms']['median_ms']:g} ms (median) after its"
            f" delay. On the refused port runbook-exporter reported reason"
            f" `{p[OURS]['refused']['reported_reason']}`, blackbox_exporter probe_success"
            f" {p[BB]['refused']['reported_success']:g}.",
            "",
            END,
        ]
    )


def write_doc(r: dict) -> None:
    write_block(DOC, START, END, render(r), HEADING)
