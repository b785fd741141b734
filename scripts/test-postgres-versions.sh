#!/usr/bin/env bash
# The database tests against every PostgreSQL major the exporter supports, one after another:
#   bash scripts/test-postgres-versions.sh            # 13 14 15 16 17 18
#   bash scripts/test-postgres-versions.sh 13 17      # only these
#   PYTEST_MARK="" bash scripts/test-postgres-versions.sh   # the slow tests too
# Each major runs the files below with RUNBOOK_TEST_PG=<major> (tests/pg.py); the results go to
# .pg/results/<major>.xml, and the version x collector and version x file tables are printed
# at the end (python -m tools.pgmatrix). Exits non-zero when any major has a failure.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/postgres-versions.sh >/dev/null || exit 1

MAJORS=("$@")
[ "${#MAJORS[@]}" -gt 0 ] || MAJORS=(13 14 15 16 17 18)
MARK="${PYTEST_MARK-not slow}"

# every test file that runs on the test PostgreSQL (tests/test_cron.py is left out: pg_cron is
# packaged for Debian's 15 only, which it always uses); tests/test_pg_versions.py first, the
# per-collector table comes from it
FILES=(
  tests/test_pg_versions.py
  tests/test_collectors_direct.py tests/test_connections.py tests/test_statements.py
  tests/test_tables.py tests/test_queues.py tests/test_pgmq.py tests/test_pgnet.py
  tests/test_retention.py tests/test_custom_queries.py tests/test_core.py
  tests/test_least_privilege.py tests/test_doctor.py tests/test_discover.py
  tests/test_discover_presets.py tests/test_discover_presets_b.py tests/test_db_faults.py
  tests/test_recovery.py tests/test_alerts.py tests/test_e2e.py tests/test_dashboards.py
  tests/test_metrics_reference.py tests/test_registry.py tests/test_reload.py
  tests/test_backups.py tests/test_compose.py tests/test_pooler.py tests/test_supabase_role.py
  tests/test_preset_good_job.py tests/test_preset_graphile_worker.py tests/test_preset_oban.py
  tests/test_preset_pg_boss.py tests/test_preset_pgqueuer.py
  tests/test_preset_procrastinate.py tests/test_preset_river.py tests/test_preset_solid_queue.py
)

mkdir -p .pg/results
rm -f .pg/results/*.xml .pg/results/*.log
failed=()
for major in "${MAJORS[@]}"; do
  start=$(date +%s)
  RUNBOOK_TEST_PG="$major" .venv/bin/python -m pytest -q -p no:cacheprovider -m "$MARK" \
    --junitxml=".pg/results/$major.xml" "${FILES[@]}" >".pg/results/$major.log" 2>&1
  rc=$?
  echo "PostgreSQL $major: exit $rc in $(($(date +%s) - start)) s ($(tail -1 ".pg/results/$major.log"))"
  [ "$rc" -eq 0 ] || failed+=("$major")
done

.venv/bin/python -m tools.pgmatrix .pg/results "${MAJORS[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failures on PostgreSQL ${failed[*]}: see .pg/results/<major>.log" >&2
  exit 1
fi
