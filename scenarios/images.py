"""The images the Docker stack runs, and an offline builder for machines without a registry.

By default docker/compose.yaml uses the official images (python:3.11-slim as the platform
image's base, redis:7-alpine, prom/prometheus). Where no image registry is reachable,
``lab images --offline`` builds stand-ins from Debian packages instead:

1. ``debootstrap`` a bookworm root (python3, venv, pip, CA certificates) into a cache directory,
   put the host's CA bundle into it (pip then works behind a TLS-intercepting proxy, as it does on
   the host) and ``docker import`` it as ``local/debian-python:bookworm``;
2. build the platform image on that base, and Redis, Prometheus and network-tools (``ip``)
   images from Debian's packages;
3. write the image names to ``images.env``, which the Docker runtime hands to compose.

Every step is skipped when its image already exists (the platform image: when it was built from
the same sources), so a second run takes seconds. Nothing here changes the defaults: without an
``images.env`` the official images are used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from scenarios.runtime.base import RuntimeError_

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO_ROOT / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"

# The defaults of docker/compose.yaml (kept in one place for the runtime and the CLI).
APP_IMAGE = "cnop-lab/platform:dev"
OFFICIAL_IMAGES = {
    "PYTHON_BASE_IMAGE": "python:3.11-slim",
    "CNOP_IMAGE": APP_IMAGE,
    "REDIS_IMAGE": "redis:7-alpine",
    "PROMETHEUS_IMAGE": "prom/prometheus:v2.55.1",
    # Any image with an `ip` command (busybox's will do): adds drill client addresses.
    "NETTOOLS_IMAGE": "alpine:3.20",
}
LOCAL_BASE_IMAGE = "local/debian-python:bookworm"
LOCAL_REDIS_IMAGE = "local/redis:7"
LOCAL_PROMETHEUS_IMAGE = "local/prometheus:2"
LOCAL_NETTOOLS_IMAGE = "local/nettools:bookworm"
IMAGES_ENV = "images.env"
SOURCE_LABEL = "org.cnop-lab.source-hash"

DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TAIL_LINES = 15

Log = Callable[[str], None]


@dataclass(frozen=True)
class BuildStep:
    image: str
    seconds: float
    built: bool  # False: it existed and was kept
    note: str = ""


# ---------------------------------------------------------------- docker helpers
def docker_available() -> None:
    """Raise one clear line when the docker CLI or its engine is missing."""
    if shutil.which("docker") is None:
        raise RuntimeError_(
            "docker is not installed (no `docker` on PATH); install Docker or use --runtime local"
        )
    probe = _run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, timeout=15)
    if probe.returncode != 0:
        raise RuntimeError_(
            "the Docker engine does not answer (`docker info` failed: "
            f"{_first_line(probe.stderr) or 'no output'}); start dockerd or use --runtime local"
        )


def image_exists(image: str) -> bool:
    probe = _run(["docker", "image", "inspect", "--format", "{{.Id}}", image], check=False)
    return probe.returncode == 0


def image_label(image: str, label: str) -> str | None:
    probe = _run(
        [
            "docker",
            "image",
            "inspect",
            "--format",
            f'{{{{index .Config.Labels "{label}"}}}}',
            image,
        ],
        check=False,
    )
    if probe.returncode != 0:
        return None
    value = probe.stdout.strip()
    return value if value and value != "<no value>" else None


def image_id(image: str) -> str | None:
    probe = _run(["docker", "image", "inspect", "--format", "{{.Id}}", image], check=False)
    return probe.stdout.strip() if probe.returncode == 0 else None


# ---------------------------------------------------------------- images.env
def images_env_path(home: Path) -> Path:
    return home / IMAGES_ENV


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments and blank lines ignored); missing file: empty."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def write_env_file(path: Path, values: Mapping[str, str], header: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines += [f"{key}={value}" for key, value in values.items()]
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    tmp.replace(path)


def cache_dir() -> Path:
    """Where the Debian root is kept between builds (outside any sandbox: it is per machine)."""
    explicit = os.environ.get("CNOP_LAB_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "cnop-lab"


# ---------------------------------------------------------------- the platform image
def app_source_hash(base_image: str) -> str:
    """What the platform image is built from: its Dockerfile, dependencies, code and base."""
    digest = hashlib.sha256()
    digest.update(base_image.encode())
    digest.update((image_id(base_image) or "").encode())
    files = [REPO_ROOT / "pyproject.toml", DOCKERFILE, DOCKER_DIR / "app_requirements.py"]
    files += sorted(
        p
        for p in (REPO_ROOT / "platform" / "cnop").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    for path in files:
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def ensure_app_image(
    image: str, base_image: str, *, log: Log = print, log_file: Path | None = None
) -> BuildStep:
    """Build the platform image unless one built from the same sources already exists."""
    began = time.monotonic()
    source = app_source_hash(base_image)
    if image_label(image, SOURCE_LABEL) == source:
        return BuildStep(image, time.monotonic() - began, built=False, note="up to date")
    log(f"building {image} on {base_image} ...")
    _docker_build(
        [
            "-f",
            str(DOCKERFILE),
            "--build-arg",
            f"PYTHON_BASE_IMAGE={base_image}",
            "--label",
            f"{SOURCE_LABEL}={source}",
            "-t",
            image,
            str(REPO_ROOT),
        ],
        what=image,
        log_file=log_file,
    )
    return BuildStep(image, time.monotonic() - began, built=True)


# ---------------------------------------------------------------- offline images
def build_offline_images(
    home: Path,
    *,
    force: bool = False,
    log: Log = print,
    mirror: str | None = None,
    ca_bundle: Path = HOST_CA_BUNDLE,
) -> tuple[list[BuildStep], Path]:
    """Build every image the stack needs from Debian packages; returns the steps and env file."""
    docker_available()
    log_file = home / "logs" / "images-build.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        build_debian_base(
            LOCAL_BASE_IMAGE, force=force, log=log, mirror=mirror, ca_bundle=ca_bundle
        ),
        ensure_app_image(APP_IMAGE, LOCAL_BASE_IMAGE, log=log, log_file=log_file),
    ]
    for image, dockerfile in (
        (LOCAL_REDIS_IMAGE, DOCKER_DIR / "images" / "redis.Dockerfile"),
        (LOCAL_PROMETHEUS_IMAGE, DOCKER_DIR / "images" / "prometheus.Dockerfile"),
        (LOCAL_NETTOOLS_IMAGE, DOCKER_DIR / "images" / "nettools.Dockerfile"),
    ):
        steps.append(
            _build_from_base(
                image, dockerfile, LOCAL_BASE_IMAGE, force=force, log=log, log_file=log_file
            )
        )
    env_path = images_env_path(home)
    write_env_file(
        env_path,
        {
            "PYTHON_BASE_IMAGE": LOCAL_BASE_IMAGE,
            "CNOP_IMAGE": APP_IMAGE,
            "REDIS_IMAGE": LOCAL_REDIS_IMAGE,
            "PROMETHEUS_IMAGE": LOCAL_PROMETHEUS_IMAGE,
            "NETTOOLS_IMAGE": LOCAL_NETTOOLS_IMAGE,
        },
        header="Written by `lab images --offline`: local images built from Debian packages.\n"
        "Delete this file to go back to the official images.",
    )
    return steps, env_path


def build_debian_base(
    image: str,
    *,
    force: bool = False,
    log: Log = print,
    mirror: str | None = None,
    ca_bundle: Path = HOST_CA_BUNDLE,
) -> BuildStep:
    began = time.monotonic()
    if not force and image_exists(image):
        return BuildStep(image, time.monotonic() - began, built=False, note="exists")
    root = cache_dir() / f"{DEBIAN_SUITE}-rootfs"
    if force or not (root / ".cnop-complete").exists():
        _debootstrap(root, mirror=mirror, log=log)
    if ca_bundle.exists():
        # pip verifies PyPI against the system bundle on Debian; behind an intercepting proxy
        # only the host's bundle (with the proxy's CA) lets it through.
        shutil.copyfile(ca_bundle, root / "etc" / "ssl" / "certs" / "ca-certificates.crt")
    log(f"importing {root} as {image} ...")
    tar = subprocess.Popen(  # noqa: S603
        ["tar", "-C", str(root), "--exclude=./.cnop-complete", "-c", "."],  # noqa: S607
        stdout=subprocess.PIPE,
    )
    try:
        result = subprocess.run(  # noqa: S603
            [  # noqa: S607
                "docker",
                "import",
                "-c",
                "ENV LANG=C.UTF-8",
                "-c",
                'CMD ["/bin/bash"]',
                "-",
                image,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if result.returncode != 0 or tar.returncode != 0:
        raise RuntimeError_(f"docker import of {image} failed: {_first_line(result.stderr)}")
    return BuildStep(image, time.monotonic() - began, built=True)


def _debootstrap(root: Path, *, mirror: str | None, log: Log) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError_(
            "debootstrap is not installed; `apt-get install -y debootstrap` (as root) first"
        )
    if os.geteuid() != 0:
        raise RuntimeError_("building the offline base image needs root (debootstrap)")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    mirror = mirror or os.environ.get("CNOP_LAB_DEBIAN_MIRROR") or "http://deb.debian.org/debian"
    log(f"debootstrap {DEBIAN_SUITE} into {tmp} (a minute or two) ...")
    with tempfile.TemporaryFile() as out:
        result = subprocess.run(  # noqa: S603
            [  # noqa: S607
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                DEBIAN_SUITE,
                str(tmp),
                mirror,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
        if result.returncode != 0:
            out.seek(0)
            tail = out.read().decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError_(f"debootstrap failed: {tail[0] if tail else 'no output'}")
    # Package caches are dead weight in an image; containers run `apt-get update` when needed.
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (tmp / sub).glob("*"):
            if entry.is_file():
                entry.unlink()
    (tmp / ".cnop-complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)


def _build_from_base(
    image: str,
    dockerfile: Path,
    base_image: str,
    *,
    force: bool,
    log: Log,
    log_file: Path | None,
) -> BuildStep:
    began = time.monotonic()
    # The Dockerfile's hash and the base's name as a label: an image built from an older
    # Dockerfile (a changed data directory, say) is rebuilt, not silently reused.
    source = hashlib.sha256(dockerfile.read_bytes() + base_image.encode()).hexdigest()
    if not force and image_label(image, SOURCE_LABEL) == source:
        return BuildStep(image, time.monotonic() - began, built=False, note="exists")
    log(f"building {image} from Debian packages ...")
    _docker_build(
        [
            "-f",
            str(dockerfile),
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            "--label",
            f"{SOURCE_LABEL}={source}",
            "-t",
            image,
            str(dockerfile.parent),
        ],
        what=image,
        log_file=log_file,
    )
    return BuildStep(image, time.monotonic() - began, built=True)


def _docker_build(args: list[str], *, what: str, log_file: Path | None) -> None:
    with tempfile.TemporaryFile() as out:
        result = subprocess.run(  # noqa: S603
            ["docker", "build", *args],  # noqa: S607
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
        out.seek(0)
        text = out.read().decode(errors="replace")
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a") as handle:
            handle.write(f"===== docker build {what} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
            handle.write(text)
    if result.returncode != 0:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else "no output"
        where = f" (full output: {log_file})" if log_file is not None else ""
        raise RuntimeError_(f"building {what} failed: {reason}{where}")


def _run(cmd: list[str], *, check: bool, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603
            cmd, capture_output=True, text=True, check=check, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise RuntimeError_(f"{cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError_(f"`{' '.join(cmd[:3])}` did not answer in {timeout:.0f} s") from exc


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""
