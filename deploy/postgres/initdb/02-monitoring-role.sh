#!/bin/sh
# The exporter's least-privilege role (deploy/sql/monitoring-role.sql, mounted read-only) with
# the queue tables of deploy/exporter/config.yml, and its password from MONITOR_PASSWORD. The
# password is set with utility-statement tracking off, so pg_stat_statements never keeps it.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v queue_tables='public.processing_jobs, public.processing_jobs_dlq' \
  -f /opt/runbook-exporter/monitoring-role.sql
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="$MONITOR_PASSWORD" <<'SQL'
SET pg_stat_statements.track_utility = off;
ALTER ROLE runbook_monitor PASSWORD :'pw';
SQL
