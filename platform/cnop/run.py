"""Start one service: ``python -m cnop.run SERVICE`` (the same command locally and in Docker)."""

from __future__ import annotations

import argparse
import importlib
import sys

import uvicorn
from pydantic import ValidationError

SERVICES = ("gateway", "auth", "user", "order", "inventory", "insights")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnop.run", description=__doc__)
    parser.add_argument("service", choices=SERVICES)
    args = parser.parse_args(argv)
    module = importlib.import_module(f"cnop.services.{args.service}.main")
    try:
        settings = module.Settings()
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        print(f"cnop {args.service}: invalid settings: {problems}", file=sys.stderr)
        return 2
    app = module.create_app(settings)
    if settings.metrics_port:
        from cnop.core.metrics import serve_metrics

        serve_metrics(settings.metrics_port, settings.host)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the gateway decides whom to trust for X-Forwarded-For
        server_header=False,
        date_header=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
