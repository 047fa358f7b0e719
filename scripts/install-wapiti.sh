#!/usr/bin/env bash
# Wapiti (PyPI wapiti3) for `lab scan --engine wapiti`, in a virtualenv of its own: it pins its own
# httpx, aiohttp and friends, which must not meet the lab's. Idempotent; a warm machine returns at
# once. The lab finds it at $CNOP_LAB_HOME/tools/wapiti (default .lab/tools/wapiti) or through
# CNOP_LAB_WAPITI. Not fatal for the rest of the lab: `--engine schemathesis` needs none of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
home=${CNOP_LAB_HOME:-.lab}
tool="$home/tools/wapiti"
spec='wapiti3>=3.2,<4'
stamp="$tool/.cnop-installed"

if [ -x "$tool/bin/wapiti" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$spec" ]; then
  exit 0
fi
echo "install-wapiti: installing $spec into $tool (a few minutes, once)"
mkdir -p "$home/tools"
"$PYTHON" -m venv "$tool"
"$tool/bin/python" -m pip install -q "$spec"
"$tool/bin/wapiti" --version >/dev/null
echo "$spec" > "$stamp"
echo "install-wapiti: ready ($tool/bin/wapiti)"
