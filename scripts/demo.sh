#!/usr/bin/env bash
# From a fresh clone to a running platform and a first trade: bootstrap, `lab up`, walkthrough.
# The platform keeps running afterwards; `.venv/bin/lab down` stops it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/bootstrap.sh
if .venv/bin/lab status >/dev/null 2>&1; then
  echo "demo: the platform is already running; reusing it"
else
  .venv/bin/lab up "$@"
fi
.venv/bin/lab walkthrough
echo
echo "The platform is still running: .venv/bin/lab status | logs gateway | down"
