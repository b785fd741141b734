"""The jobs table of the queue benchmarks: runbook 000's hand-rolled queue table (CREATE, also
bench/queue_explain.py's) and issue 18's fill, shared by bench/compare and bench/queue_scale.py:
in id order, finished jobs over the last 30 days, 1 % failed and 0.1 % dead among them (the
history grows with the table, as in production), a few hundred pending and some processing (10
of them stuck) scattered over the heap the way updates leave them."""

from __future__ import annotations

CREATE = """
CREATE TABLE {t} (
    id            bigserial PRIMARY KEY,
    status        text NOT NULL DEFAULT 'pending',
    payload       jsonb,
    error_message text,
    retry_count   integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_enabled = off)
"""
FILL = """
INSERT INTO {t} (status, payload, error_message, retry_count, created_at, updated_at)
SELECT s.status, jsonb_build_object('file', 'doc-' || g || '.pdf', 'pages', g %% 40),
       CASE WHEN s.status IN ('failed', 'dead') THEN 'OCR provider timed out' END,
       CASE WHEN s.status = 'failed' THEN g %% 4 WHEN s.status = 'dead' THEN 3 ELSE 0 END,
       s.at - interval '2 minutes', s.at
FROM generate_series(1, %(n)s) g
CROSS JOIN LATERAL (SELECT
    CASE WHEN g %% %(pstep)s = 1 AND g / %(pstep)s < %(pending)s THEN 'pending'
         WHEN g %% %(qstep)s = 2 AND g / %(qstep)s < %(processing)s THEN 'processing'
         WHEN g %% 1000 = 500 THEN 'dead'
         WHEN g %% 100 = 3 THEN 'failed'
         ELSE 'completed' END AS status) s0
CROSS JOIN LATERAL (SELECT s0.status,
    CASE WHEN s0.status = 'pending' THEN now() - (g %% 600) * interval '1 second'
         WHEN s0.status = 'processing' AND g / %(qstep)s < 10 THEN now() - interval '45 minutes'
         WHEN s0.status = 'processing' THEN now() - interval '20 seconds'
         ELSE now() - (%(n)s - g) * (interval '30 days' / %(n)s) END AS at) s
"""


def create_sql(table: str) -> str:
    return CREATE.format(t=table)


def fill_sql(table: str) -> str:
    return FILL.format(t=table)


def fill_params(n: int, pending: int = 300, processing: int = 60) -> dict[str, int]:
    """Parameters of FILL for n rows; the active counts shrink for tiny tables (smoke runs)."""
    pending, processing = max(min(pending, n // 10), 1), max(min(processing, n // 50), 1)
    return {
        "n": n,
        "pending": pending,
        "processing": processing,
        "pstep": max(n // pending, 1),
        "qstep": max(n // processing, 1),
    }
