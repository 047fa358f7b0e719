"""A real Prometheus (the Debian binary) scraping a tiny metrics endpoint served by the test."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from tests.conftest import free_port

PROMETHEUS = "/usr/bin/prometheus"


@dataclass
class Exporter:
    registry: CollectorRegistry
    gauge: Gauge
    requests: Counter
    url: str


@dataclass
class PromServer:
    url: str
    exporter: Exporter


@pytest.fixture(scope="session")
def exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    gauge = Gauge("lab_test_state", "a breaker-like state", registry=registry)
    requests = Counter("lab_test_requests", "requests by route", ["route"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(registry, gauge, requests, f"127.0.0.1:{port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="session")
def prometheus(
    exporter: Exporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PromServer]:
    binary = shutil.which("prometheus") or PROMETHEUS
    if not Path(binary).exists():
        pytest.fail("prometheus is not installed (apt-get install prometheus)")
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: grader-test\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 900ms\n"
        "    static_configs:\n"
        f"      - targets: ['{exporter.url}']\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("prometheus did not become ready")
            time.sleep(0.1)
        yield PromServer(url, exporter)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
