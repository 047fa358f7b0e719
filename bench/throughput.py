"""Requests per second through the gateway vs. straight to a service, measured in one run.

Run against a sandbox that is up (``lab up``):

    .venv/bin/python bench/throughput.py [--seconds 10] [--concurrency 32]

Both sides fetch the same asset (``GET .../inventory/assets/BTC``). Through the gateway each
request also pays for the per-IP limiter (one Redis script), routing, the breaker and one more
HTTP hop. Clients use one loopback source address each (127.0.1.N) so the per-IP limit of the
hardened gateway (1000/min) is not what gets measured.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from scenarios.config import LabConfig
from scenarios.runtime import current_runtime


async def _worker(
    url: str,
    ip: str,
    deadline: float,
    latencies: list[float],
    errors: list[int],
    headers: dict[str, str],
) -> None:
    transport = httpx.AsyncHTTPTransport(local_address=ip)
    async with httpx.AsyncClient(transport=transport, timeout=10, headers=headers) as client:
        sent = 0
        while time.perf_counter() < deadline and sent < 900:  # stay under one IP's burst
            started = time.perf_counter()
            r = await client.get(url)
            latencies.append(time.perf_counter() - started)
            sent += 1
            if r.status_code != 200:
                errors.append(r.status_code)


async def measure(
    url: str,
    seconds: float,
    concurrency: int,
    ip_block: int,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _worker(
                url,
                f"127.{ip_block}.{n // 250}.{n % 250 + 2}",
                deadline,
                latencies,
                errors,
                headers or {},
            )
            for n in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0,
        "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    runtime = current_runtime(LabConfig())
    if runtime is None:
        raise SystemExit("no sandbox is running: start one with `lab up`")
    endpoints = runtime.endpoints()
    inventory = endpoints.services.get("inventory")
    if not inventory:
        raise SystemExit("this runtime does not expose the inventory service to the host")
    # Straight to the service as the operator: backends answer the platform's credential only.
    direct = asyncio.run(
        measure(
            f"{inventory}/inventory/assets/BTC",
            args.seconds,
            args.concurrency,
            1,
            runtime.internal_headers(),
        )
    )
    gateway = asyncio.run(
        measure(
            f"{endpoints.gateway}/api/v1/inventory/assets/BTC", args.seconds, args.concurrency, 2
        )
    )
    print(f"{'path':<10} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, row in (("direct", direct), ("gateway", gateway)):
        print(
            f"{name:<10} {row['requests']:>9.0f} {row['rps']:>8.1f} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['errors']:>7.0f}"
        )
    print(f"gateway/direct throughput ratio: {gateway['rps'] / direct['rps']:.2f}")


if __name__ == "__main__":
    main()
