-- runbook-exporter on Supabase: the monitoring role, its grants on Supabase Queues (pgmq) and
-- pg_net, and the SECURITY DEFINER functions through which it reads pg_cron's jobs and runs.
--
-- What the role gets, and why:
--   LOGIN, CONNECTION LIMIT 5     the exporter holds one connection per target
--   pg_monitor                    every session's state and query, pg_stat_statements, locks
--   search_path with `extensions` Supabase installs pg_stat_statements (and others) there
--   USAGE on `extensions`         to read pg_stat_statements there
--   SELECT on pgmq.meta and on every queue's pgmq.q_<name> and pgmq.a_<name> (the queues
--                                 collector: depth, oldest message, reads, archive), also on
--                                 queues created later by the role that runs this script
--                                 (ALTER DEFAULT PRIVILEGES)
--   SELECT on net._http_response and net.http_request_queue (the pgnet collector)
--   EXECUTE on runbook_exporter.cron_jobs() and runbook_exporter.cron_job_runs(bigint[], int)
--                                 pg_cron enables row-level security on cron.job and
--                                 cron.job_run_details with the policy `username =
--                                 current_user`, so a monitoring role sees no one's jobs. These
--                                 two functions run as their owner (the role running this
--                                 script, which must see every row: on Supabase `postgres`)
--                                 and return only what the cron collector needs: job ids,
--                                 names, schedules, roles, databases, active flags, and per
--                                 job its newest runs' ids, statuses and times. Never a job's
--                                 command or a run's return message: those may hold tokens
--                                 (an Authorization header of a pg_net call).
--   default_transaction_read_only = on, as a second guard besides the exporter's own setting
-- Nothing else: no INSERT/UPDATE/DELETE anywhere, no SELECT on application tables, no
-- messages' bodies beyond the queue tables the queues collector counts.
--
-- Run it with psql, connected to the database pg_cron schedules in (on Supabase `postgres`)
-- as `postgres` (direct connection or the session pooler, port 5432):
--
--   psql "$ADMIN_DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/sql/supabase-monitoring-role.sql
--   psql "$ADMIN_DATABASE_URL" -c '\password runbook_monitor'   # prompts; sends a SCRAM hash
--
-- Variables (psql -v name=value), optional:
--   password_scram  sets the password from a SCRAM-SHA-256 verifier (what psql's \password
--                   sends). A cleartext password is refused: the statement would keep it in
--                   pg_stat_statements and in the server log.
--
-- Safe to run again, e.g. after creating a queue by another role or installing an extension:
-- it creates what is missing and repeats the grants. To remove it: DROP SCHEMA
-- runbook_exporter CASCADE; DROP OWNED BY runbook_monitor; DROP ROLE runbook_monitor;

\set ON_ERROR_STOP on

\if :{?password}
  \echo 'refused: -v password=... would put the cleartext password into pg_stat_statements and the server log'
  DO $$ BEGIN RAISE EXCEPTION 'use \password runbook_monitor or -v password_scram=<SCRAM-SHA-256 verifier>'; END $$;
\endif
\if :{?password_scram}
  SELECT :'password_scram' ~ '^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$' AS password_is_verifier \gset
  \if :password_is_verifier
  \else
    DO $$ BEGIN RAISE EXCEPTION 'password_scram is not a SCRAM-SHA-256 verifier'; END $$;
  \endif
\endif

SELECT current_database() AS dbname \gset

BEGIN;

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'runbook_monitor') THEN
    -- defaults: NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT
    CREATE ROLE runbook_monitor LOGIN CONNECTION LIMIT 5;
  END IF;
END
$$;

ALTER ROLE runbook_monitor WITH LOGIN CONNECTION LIMIT 5;
ALTER ROLE runbook_monitor SET default_transaction_read_only = on;
ALTER ROLE runbook_monitor SET search_path = "$user", public, extensions;
GRANT pg_monitor TO runbook_monitor;
GRANT CONNECT ON DATABASE :"dbname" TO runbook_monitor;

DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'extensions') THEN
    GRANT USAGE ON SCHEMA extensions TO runbook_monitor;
  END IF;
END
$$;

-- Supabase Queues (pgmq): the queue registry, each queue's table and archive, and the
-- queues created from now on by the role running this script
DO $$
DECLARE
  q record;
  prefix text;
  rel regclass;
BEGIN
  IF to_regclass('pgmq.meta') IS NULL THEN
    RAISE NOTICE 'pgmq is not installed in this database: no queue grants';
    RETURN;
  END IF;
  GRANT USAGE ON SCHEMA pgmq TO runbook_monitor;
  GRANT SELECT ON TABLE pgmq.meta TO runbook_monitor;
  FOR q IN SELECT m.queue_name::text AS name FROM pgmq.meta m ORDER BY 1 LOOP
    FOREACH prefix IN ARRAY ARRAY['q_', 'a_'] LOOP
      rel := to_regclass(format('pgmq.%I', prefix || q.name));
      IF rel IS NULL THEN
        RAISE NOTICE 'pgmq queue %: table pgmq.% is missing', q.name, prefix || q.name;
      ELSE
        EXECUTE format('GRANT SELECT ON TABLE %s TO runbook_monitor', rel);
      END IF;
    END LOOP;
  END LOOP;
  ALTER DEFAULT PRIVILEGES IN SCHEMA pgmq GRANT SELECT ON TABLES TO runbook_monitor;
END
$$;

-- pg_net: its responses and its request queue
DO $$
DECLARE
  rel regclass;
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'net') THEN
    RAISE NOTICE 'pg_net is not installed in this database: no pg_net grants';
    RETURN;
  END IF;
  GRANT USAGE ON SCHEMA net TO runbook_monitor;
  FOREACH rel IN ARRAY ARRAY[to_regclass('net._http_response'), to_regclass('net.http_request_queue')]
  LOOP
    IF rel IS NOT NULL THEN
      EXECUTE format('GRANT SELECT ON TABLE %s TO runbook_monitor', rel);
    END IF;
  END LOOP;
END
$$;

-- pg_cron: the functions exist only where pg_cron's tables do (the database named by
-- cron.database_name); elsewhere the cron collector is quiet and needs nothing.
SELECT to_regclass('cron.job') IS NOT NULL AND to_regclass('cron.job_run_details') IS NOT NULL
  AS has_pg_cron \gset
\if :has_pg_cron
-- the functions' owner must see every row, or they would hide rows just the same
DO $$
BEGIN
  IF pg_catalog.row_security_active('cron.job'::regclass)
     OR pg_catalog.row_security_active('cron.job_run_details'::regclass) THEN
    RAISE EXCEPTION 'role % does not see every pg_cron job: row-level security applies to it',
        current_user
      USING HINT = 'run this script as the owner of pg_cron''s tables or a role with BYPASSRLS '
        '(on Supabase: postgres)';
  END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS runbook_exporter;
REVOKE ALL ON SCHEMA runbook_exporter FROM PUBLIC;
GRANT USAGE ON SCHEMA runbook_exporter TO runbook_monitor;

-- every job, without its command
CREATE OR REPLACE FUNCTION runbook_exporter.cron_jobs()
RETURNS TABLE (jobid bigint, jobname text, schedule text, username text, database text,
               active boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT j.jobid, j.jobname::text, j.schedule, j.username::text, j.database, j.active
  FROM cron.job j
$fn$;

-- the newest `lookback` runs (at most 1000) of each of the given jobs (at most 1000). With an
-- index on cron.job_run_details (jobid, runid) they are read through it: the job matched as
-- a range and ordered by (jobid, runid), an order only that index delivers, so the planner
-- cannot prefer the runid primary key (it assumes a job's runs are spread evenly and would
-- filter the other jobs' runs away, reading the whole history for a job that stopped
-- running): jobs x lookback index entries whatever the history holds. Without the index, the
-- primary key backwards is the best there is. Planned on each call (EXECUTE), the limit a
-- constant.
CREATE OR REPLACE FUNCTION runbook_exporter.cron_job_runs(job_ids bigint[], lookback integer)
RETURNS TABLE (jobid bigint, runid bigint, status text, start_time timestamptz,
               end_time timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  run_match text := 'd.jobid = ids.id';
  run_order text := 'd.runid DESC';
BEGIN
  IF EXISTS (
    SELECT FROM pg_index i
    JOIN pg_attribute a1 ON a1.attrelid = i.indrelid AND a1.attnum = i.indkey[0]
    JOIN pg_attribute a2 ON a2.attrelid = i.indrelid AND a2.attnum = i.indkey[1]
    WHERE i.indrelid = 'cron.job_run_details'::regclass AND i.indisvalid
      AND i.indpred IS NULL AND a1.attname = 'jobid' AND a2.attname = 'runid'
  ) THEN
    run_match := 'd.jobid BETWEEN ids.id AND ids.id';
    run_order := 'd.jobid DESC, d.runid DESC';
  END IF;
  RETURN QUERY EXECUTE format(
    'SELECT ids.id, r.runid, r.status, r.start_time, r.end_time
     FROM (SELECT DISTINCT x.id FROM unnest($1[1:1000]) AS x(id)) ids
     CROSS JOIN LATERAL (
       SELECT d.runid, d.status, d.start_time, d.end_time
       FROM cron.job_run_details d
       WHERE %s
       ORDER BY %s
       LIMIT %s
     ) r', run_match, run_order, least(greatest(coalesce(lookback, 0), 0), 1000))
  USING job_ids;
END
$fn$;

REVOKE ALL ON FUNCTION runbook_exporter.cron_jobs() FROM PUBLIC;
REVOKE ALL ON FUNCTION runbook_exporter.cron_job_runs(bigint[], integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION runbook_exporter.cron_jobs() TO runbook_monitor;
GRANT EXECUTE ON FUNCTION runbook_exporter.cron_job_runs(bigint[], integer) TO runbook_monitor;

SELECT EXISTS (
  SELECT FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_attribute a1 ON a1.attrelid = i.indrelid AND a1.attnum = i.indkey[0]
  JOIN pg_catalog.pg_attribute a2 ON a2.attrelid = i.indrelid AND a2.attnum = i.indkey[1]
  WHERE i.indrelid = 'cron.job_run_details'::regclass AND i.indisvalid
    AND a1.attname = 'jobid' AND a2.attname = 'runid'
) AS has_runs_index \gset
\if :has_runs_index
\else
  \echo 'note: cron.job_run_details has no index on (jobid, runid); outside a transaction, run:'
  \echo '  CREATE INDEX CONCURRENTLY IF NOT EXISTS job_run_details_jobid_runid_idx ON cron.job_run_details (jobid, runid);'
\endif
\else
  \echo 'note: pg_cron is not installed in this database: no cron functions'
\endif

\if :{?password_scram}
ALTER ROLE runbook_monitor WITH PASSWORD :'password_scram';
\endif

COMMIT;

\if :{?password_scram}
\else
  \echo 'runbook_monitor has no new password from this script: set one with \\password runbook_monitor'
\endif
