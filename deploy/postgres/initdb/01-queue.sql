-- runbook 000's job queue, seeded healthy as in `runbook-exporter demo` (deploy/compose.yaml).
-- Generated from exporter/demo/run.py: python -c 'from exporter.demo.run import init_sql; print(init_sql(), end="")'
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

CREATE TABLE processing_jobs (
    id            bigserial PRIMARY KEY,
    status        text NOT NULL DEFAULT 'pending',
    payload       jsonb,
    error_message text,
    retry_count   integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- the indexes `runbook-exporter doctor` recommends (docs/queues.md)
CREATE INDEX processing_jobs_active_idx ON processing_jobs (status)
    INCLUDE (created_at, updated_at) WHERE status IN ('pending', 'processing');
CREATE INDEX processing_jobs_failed_idx ON processing_jobs (status, retry_count)
    WHERE status IN ('failed');
CREATE INDEX processing_jobs_finished_idx ON processing_jobs (updated_at)
    WHERE status IN ('completed', 'failed');
CREATE TABLE processing_jobs_dlq (
    id         bigserial PRIMARY KEY,
    job_id     bigint,
    error      text,
    failed_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO processing_jobs (status, created_at, updated_at)
    SELECT 'completed', now() - make_interval(mins => g), now() - make_interval(mins => g)
    FROM generate_series(1, 500) g;
INSERT INTO processing_jobs (status, created_at, updated_at)
    SELECT 'pending', now() - make_interval(secs => g * 7), now() - make_interval(secs => g * 7)
    FROM generate_series(1, 20) g;
INSERT INTO processing_jobs (status, created_at, updated_at)
    VALUES ('processing', now() - interval '3 minutes', now() - interval '1 minute');
INSERT INTO processing_jobs (status, retry_count, error_message, created_at, updated_at)
    VALUES ('failed', 1, 'OCR provider timed out', now() - interval '2 hours',
            now() - interval '1 hour');
INSERT INTO processing_jobs_dlq (job_id, error) VALUES (42, 'invalid PDF');
ANALYZE processing_jobs;
