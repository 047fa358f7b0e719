"""The lab's own settings (``CNOP_LAB_*``): where a sandbox keeps its files and which ports it uses.

One object describes one sandbox. Every port is a setting, and ``port_offset`` shifts them all at
once, so a test (or a second learner on the same machine) can run a sandbox next to another one.
Once a sandbox is up, its actual ports live in ``state.json``; commands that act on a running
sandbox read them from there, not from here.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]

SERVICE_PORTS = {
    "gateway": 8080,
    "user": 8000,
    "inventory": 8001,
    "order": 8002,
    "auth": 8003,
    "insights": 8004,
}
METRICS_PORTS = {
    "gateway": 9180,
    "user": 9100,
    "inventory": 9101,
    "order": 9102,
    "auth": 9103,
    "insights": 9104,
}
JWT_SECRET_BYTES = 48


class LabConfig(BaseSettings):
    """Settings of one sandbox; every field is overridable as ``CNOP_LAB_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CNOP_LAB_", extra="ignore")

    home: Path = Path(".lab")
    runtime: str = "auto"  # auto, local or docker: what `lab up` uses without --runtime
    host: str = "127.0.0.1"
    port_offset: int = Field(default=0, ge=0, le=55000)

    gateway_port: int = SERVICE_PORTS["gateway"]
    user_port: int = SERVICE_PORTS["user"]
    inventory_port: int = SERVICE_PORTS["inventory"]
    order_port: int = SERVICE_PORTS["order"]
    auth_port: int = SERVICE_PORTS["auth"]
    insights_port: int = SERVICE_PORTS["insights"]
    redis_port: int = 6380
    dynamodb_port: int = 8010
    prometheus_port: int = 9090

    gateway_metrics_port: int = METRICS_PORTS["gateway"]
    user_metrics_port: int = METRICS_PORTS["user"]
    inventory_metrics_port: int = METRICS_PORTS["inventory"]
    order_metrics_port: int = METRICS_PORTS["order"]
    auth_metrics_port: int = METRICS_PORTS["auth"]
    insights_metrics_port: int = METRICS_PORTS["insights"]

    table_prefix: str = Field(default="cnop", pattern=r"^[A-Za-z0-9_.]{1,40}$")
    cors_origins: list[str] = ["http://127.0.0.1:3000", "http://localhost:3000"]
    service_log_level: str = "INFO"
    # Extra CNOP_* settings for every service, e.g. {"CNOP_GEMINI_API_KEY": "..."} (JSON).
    service_env: dict[str, str] = {}

    redis_server_bin: str = "redis-server"
    prometheus_bin: str = "prometheus"
    promtool_bin: str = "promtool"
    scrape_interval: str = "1s"
    monitoring_dir: Path = REPO_ROOT / "monitoring"

    # The local runtime starts the six services as forks of one interpreter that imported them
    # once (cnop.launch): a few seconds instead of ~9 CPU-seconds of imports, and memory shared
    # between them. Fork after import is the norm only on Linux; elsewhere (or with
    # CNOP_LAB_FORK_SERVICES=false) each service starts in an interpreter of its own.
    fork_services: bool = sys.platform == "linux"
    ready_poll_seconds: float = Field(default=0.1, gt=0)
    stop_grace_seconds: float = Field(default=10.0, ge=0)

    @field_validator("home", "monitoring_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Resolved once, so a sandbox started from one directory is still found after a `cd`
        # inside the same process (and state.json records an unambiguous path).
        return value.expanduser().resolve()

    # --- ports -------------------------------------------------------------------------------
    def port(self, name: str) -> int:
        """The port of a service or infra component (``gateway``, ``redis``...), offset applied."""
        return int(getattr(self, f"{name}_port")) + self.port_offset

    def metrics_port(self, service: str) -> int:
        return int(getattr(self, f"{service}_metrics_port")) + self.port_offset

    def ports(self) -> dict[str, int]:
        names = [*SERVICE_PORTS, "redis", "dynamodb", "prometheus"]
        return {name: self.port(name) for name in names}

    def metrics_ports(self) -> dict[str, int]:
        return {service: self.metrics_port(service) for service in METRICS_PORTS}

    # --- files -------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def prometheus_config_file(self) -> Path:
        return self.home / "prometheus.yml"

    @property
    def jwt_secret_file(self) -> Path:
        return self.home / "jwt_secret"

    @property
    def internal_secret_file(self) -> Path:
        return self.home / "internal_secret"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def ensure_dirs(self) -> None:
        for directory in (self.home, self.logs_dir, self.data_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def jwt_secret(self) -> str:
        """The sandbox's signing secret: random, made once, readable by its owner only.

        Kept across `lab down`/`lab up`, so tokens of a persisted sandbox stay valid.
        """
        return self._private_secret(self.jwt_secret_file)

    def internal_secret(self) -> str:
        """The credential the services prove they are the platform with (``X-CNOP-Internal-
        Token``); made like the signing secret, and a different one."""
        return self._private_secret(self.internal_secret_file)

    def _private_secret(self, path: Path) -> str:
        if path.exists():
            secret = path.read_text().strip()
            if len(secret) >= 32:
                return secret
        self.home.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(JWT_SECRET_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        path.chmod(0o600)
        return secret
