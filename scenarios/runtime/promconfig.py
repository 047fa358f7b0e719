"""Renders monitoring/prometheus.yml.j2 for a sandbox; shared by the local and Docker runtimes.

Runtimes differ only in the addresses Prometheus scrapes (``127.0.0.1:9101`` locally,
``inventory:9101`` on a Docker network), so they pass those and the template does the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

TEMPLATE = "prometheus.yml.j2"
RULES = "rules.yml"


@dataclass(frozen=True)
class ScrapeJob:
    name: str  # the job label: a service name, or "prometheus"
    targets: Sequence[str]  # host:port
    metrics_path: str = "/metrics"


def render_prometheus_config(
    monitoring_dir: Path,
    jobs: Sequence[ScrapeJob],
    *,
    runtime: str,
    sandbox: str,
    scrape_interval: str = "1s",
    rule_files: Sequence[str | Path] = (),
) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(monitoring_dir)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML; values go through |tojson
    )
    return env.get_template(TEMPLATE).render(
        runtime=runtime,
        sandbox=sandbox,
        scrape_interval=scrape_interval,
        scrape_timeout=scrape_interval,
        rule_files=[str(p) for p in rule_files],
        jobs=[
            {"name": j.name, "targets": list(j.targets), "metrics_path": j.metrics_path}
            for j in jobs
        ],
    )


def local_jobs(
    host: str, metrics_ports: Mapping[str, int], prometheus_port: int
) -> list[ScrapeJob]:
    jobs = [ScrapeJob(name, [f"{host}:{port}"]) for name, port in metrics_ports.items()]
    jobs.append(ScrapeJob("prometheus", [f"{host}:{prometheus_port}"]))
    return jobs
