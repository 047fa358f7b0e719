#!/usr/bin/env bash
# Bootstrap, then the test suite (unit, API, end-to-end, every lab executed (tests/labs) and the
# schemathesis fuzzing of the public API, tests/fuzz). Arguments go to pytest as they are,
# e.g. scripts/test.sh tests/unit -x. Docker-marked tests run only with CNOP_DOCKER_TESTS=1;
# the mutation tests (marker mutants) only when asked for: scripts/test.sh -m mutants tests/mutants.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/bootstrap.sh
# A -m given in the arguments comes later and wins.
if [ "${CNOP_DOCKER_TESTS:-0}" != "1" ]; then
  marker=(-m "not docker and not mutants")
else
  marker=(-m "not mutants")
fi
exec .venv/bin/pytest "${marker[@]}" "$@"
