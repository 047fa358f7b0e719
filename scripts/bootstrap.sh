#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: system packages (only when missing), .venv, the project.
# Safe to run again and again; a warm machine finishes in about a second.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)  # lab bench: a load generator that is not the bottleneck
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if [ ${#missing[@]} -gt 0 ]; then
  # shellcheck disable=SC2207
  packages=($(printf '%s\n' "${missing[@]}" | sort -u))
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "bootstrap: need root (or sudo) to install: ${packages[*]}" >&2
      exit 1
    }
    sudo="sudo"
  fi
  echo "bootstrap: installing ${packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "bootstrap: Python >= 3.11 is required ($("$PYTHON" --version 2>&1) found)" >&2
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi

# Every install gets the exact versions pinned in constraints.txt (a class, CI and the Docker
# image alike); scripts/refresh-constraints.sh re-pins them. Reinstall only when pyproject.toml
# or constraints.txt changed (or the install is incomplete).
stamp=.venv/.cnop-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x .venv/bin/lab ] || [ ! -x .venv/bin/pytest ]; then
  echo "bootstrap: installing the project into .venv (versions from constraints.txt)"
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi
# The wapiti scanner lives in a virtualenv of its own (its pins clash with ours); a failure here
# leaves `lab scan --engine wapiti` unavailable, nothing else.
scripts/install-wapiti.sh || echo "bootstrap: wapiti not installed (lab scan --engine wapiti needs it)" >&2
echo "bootstrap: ready (.venv/bin/lab)"
