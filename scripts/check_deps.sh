#!/usr/bin/env bash
# Every workspace member must declare what it imports: an import that works only because the
# shared venv happens to have it fails here (deptry DEP001 missing, DEP003 transitive).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
status=0
for member in libs/chassis services/* gateway; do
  [ -f "$root/$member/pyproject.toml" ] || continue
  echo "deps: $member"
  (cd "$root/$member" && "$root/.venv/bin/deptry" src --ignore DEP002 --no-ansi \
      --package-module-name-map "crm-chassis=chassis,crm-proto=crm") || status=1
done
exit $status
