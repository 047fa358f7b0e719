"""`lab bench`'s pure pieces: reading wrk's report and the --protection switches."""

from __future__ import annotations

import http.server
import shutil
import threading
import time

import pytest

from scenarios.bench import PROTECTIONS, measure, parse_protections, parse_wrk

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:48191/api/v1/inventory/assets/BTC
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   170.12ms   40.02ms 301.55ms   70.00%
    Req/Sec    10.50      3.11    20.00     80.00%
  Latency Distribution
     50%  165.70ms
     75%  190.01ms
     90%  250.00ms
     99%    1.20s
  28 requests in 3.06s, 37.13KB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:      9.15
Transfer/sec:     12.13KB
"""


def test_wrk_report_is_read_in_base_units() -> None:
    numbers = parse_wrk(WRK_OUTPUT)
    assert numbers["requests"] == 28
    assert numbers["seconds"] == pytest.approx(3.06)
    assert numbers["rps"] == pytest.approx(28 / 3.06)
    assert numbers["p50_ms"] == pytest.approx(165.70)
    assert numbers["p99_ms"] == pytest.approx(1200.0)
    assert numbers["non_2xx"] == 4 + 3  # refusals and socket errors both count as failures


def test_microseconds_and_a_clean_run() -> None:
    text = "  Latency Distribution\n     50%  812.00us\n     99%    2.10ms\n"
    text += "  5000 requests in 1.00s, 1.00MB read\nRequests/sec: 5000.00\n"
    numbers = parse_wrk(text)
    assert numbers["p50_ms"] == pytest.approx(0.812)
    assert numbers["non_2xx"] == 0


def test_output_without_totals_is_an_error() -> None:
    with pytest.raises(ValueError, match="no totals"):
        parse_wrk("unable to connect to 127.0.0.1:9 Connection refused")


def test_protection_switches() -> None:
    assert parse_protections(["limiter=off", "breaker=off", "limiter=off"]) == [
        "limiter",
        "breaker",
    ]
    for bad in ("limiter", "limiter=on", "nope=off"):
        with pytest.raises(ValueError, match="limiter=off"):
            parse_protections([bad])
    assert set(PROTECTIONS) >= {"limiter", "breaker", "revocation", "internal-auth"}


@pytest.mark.parametrize("tool", ["python", "wrk"])
def test_the_warm_up_load_runs_first_and_is_not_counted(tool: str) -> None:
    if tool == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk); the python load is tested")
    hits = []

    class Counting(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            hits.append(time.monotonic())
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        warmup = 2.0
        began = time.monotonic()
        row = measure("direct", url, {}, 1, 2, tool, warmup=warmup)
    finally:
        server.shutdown()
    # The measured load starts after the whole warm-up, so every hit before began + warmup is
    # a warm-up hit; 2 s leave a load that a loaded machine starts slowly time for its first.
    warm = [t for t in hits if t < began + warmup]
    assert warm, "no load before the measured second"
    assert 0 < row.requests <= len(hits) - len(warm)
