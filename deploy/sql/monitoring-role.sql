-- runbook-exporter: a least-privilege database role for the exporter.
--
-- What the role gets, and why:
--   LOGIN, CONNECTION LIMIT 5   the exporter holds up to max_sessions (default 3) per target,
--                               plus one for doctor or discover (docs/deployment.md)
--   pg_monitor                  pg_stat_activity with every session's query and state,
--                               pg_stat_database, pg_database_size, pg_stat_statements,
--                               lock information (connections, database, tables, statements)
--   pg_use_reserved_connections (PostgreSQL 16+) a way back in when the server is full: with
--                               reserved_connections = N (postgresql.conf, restart) N slots
--                               stay free for such roles, so an exporter that lost its
--                               session at max_connections reconnects and reports it.
--                               Before 16 there is no such slot for a non-superuser: see
--                               docs/deployment.md for the alternatives.
--   CONNECT on the database     explicit, for clusters that revoked it from PUBLIC
--   USAGE on the queue schemas  and SELECT on the queue tables only (the queues collector)
--   USAGE on the schema of pg_stat_statements (public, or `extensions` on Supabase)
--   default_transaction_read_only = on, as a second guard besides the exporter's own setting
-- Nothing else: no INSERT/UPDATE/DELETE anywhere, no SELECT on application tables.
--
-- Run it with psql, connected to the target database as a role that may create roles and
-- grant pg_monitor (a superuser, or `postgres` on Supabase):
--
--   psql "$ADMIN_DSN" -v ON_ERROR_STOP=1 \
--     -v queue_tables='public.processing_jobs, public.dead_letter_jobs' \
--     -f deploy/sql/monitoring-role.sql
--   psql "$ADMIN_DSN" -c '\password runbook_monitor'   # prompts; sends only a SCRAM hash
--
-- Variables (psql -v name=value), all optional:
--   queue_tables  comma-separated tables the exporter counts: every queue `table` and
--                 `dead_letter_table` of the target's configuration, schema-qualified as in
--                 the config (default: public.processing_jobs, runbook 000's table). Each
--                 must exist; quote mixed-case names as in SQL ("Jobs"."Queue").
--   password_scram  sets the password from a SCRAM-SHA-256 verifier (what psql's \password
--                 sends; in scripts, libpq's PQencryptPasswordConn, e.g. psycopg's
--                 conn.pgconn.encrypt_password(pw, b"runbook_monitor", b"scram-sha-256")).
--                 A cleartext password is refused: the statement text would keep it in
--                 pg_stat_statements (which the statements collector reads and exports) and
--                 in the server log when log_statement covers DDL.
--   dbname        the database to grant CONNECT on (default: the one psql is connected to).
--
-- Safe to run again (after adding a queue, or to reset the privileges): it creates the role
-- only when missing and repeats the grants. To drop it later, in every database it was
-- granted on: DROP OWNED BY runbook_monitor; then DROP ROLE runbook_monitor;

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

\if :{?queue_tables}
\else
  \set queue_tables 'public.processing_jobs'
\endif
\if :{?dbname}
\else
  SELECT current_database() AS dbname \gset
\endif

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

GRANT pg_monitor TO runbook_monitor;

-- a slot at max_connections (PostgreSQL 16+); useless while reserved_connections is 0
SELECT pg_catalog.current_setting('server_version_num')::int >= 160000 AS has_reserved_slots \gset
\if :has_reserved_slots
  GRANT pg_use_reserved_connections TO runbook_monitor;
  SELECT pg_catalog.current_setting('reserved_connections')::int = 0 AS no_reserved_slots \gset
  \if :no_reserved_slots
    \echo 'note: reserved_connections is 0: set it (e.g. 3) in postgresql.conf and restart, or runbook_monitor cannot get in when the server is full'
  \endif
\else
  \echo 'note: PostgreSQL < 16 has no reserved slots for non-superusers: see docs/deployment.md (connections at max_connections)'
\endif
GRANT CONNECT ON DATABASE :"dbname" TO runbook_monitor;

-- The table list goes through a session setting because psql does not substitute variables
-- inside the dollar-quoted block below.
SELECT pg_catalog.set_config('runbook_exporter.queue_tables', :'queue_tables', true) AS _set \gset

DO $$
DECLARE
  item text;
  rel regclass;
  schema_name name;
BEGIN
  FOREACH item IN ARRAY
    string_to_array(current_setting('runbook_exporter.queue_tables'), ',')
  LOOP
    item := btrim(item);
    CONTINUE WHEN item = '';
    rel := to_regclass(item);
    IF rel IS NULL THEN
      RAISE EXCEPTION 'queue table % does not exist in database %', item, current_database()
        USING HINT = 'pass the tables of the exporter configuration: -v queue_tables=schema.table,...';
    END IF;
    SELECT n.nspname INTO schema_name
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = rel;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO runbook_monitor', schema_name);
    EXECUTE format('GRANT SELECT ON TABLE %s TO runbook_monitor', rel);
    RAISE NOTICE 'runbook_monitor may read %', rel;
  END LOOP;

  -- the statements collector reads the pg_stat_statements view wherever it is installed
  SELECT n.nspname INTO schema_name
  FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
  WHERE e.extname = 'pg_stat_statements';
  IF FOUND THEN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO runbook_monitor', schema_name);
  ELSE
    RAISE NOTICE 'pg_stat_statements is not installed in this database: the statements '
      'collector will report it unavailable (CREATE EXTENSION pg_stat_statements to enable it)';
  END IF;
END
$$;

\if :{?password_scram}
ALTER ROLE runbook_monitor WITH PASSWORD :'password_scram';
\endif

COMMIT;

\if :{?password_scram}
\else
  \echo 'runbook_monitor has no new password from this script: set one with \\password runbook_monitor'
\endif
