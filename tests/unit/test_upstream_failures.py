"""How the gateway's upstream client names and maps each way a call can fail, against real
sockets: the log's ``error`` and the status are the platform's vocabulary (labs and drills read
them), whatever HTTP client library sits underneath."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import uvicorn
from cnop.core.breaker import BreakerPolicy, CircuitBreaker
from cnop.core.problems import ProblemError
from cnop.services.gateway.upstreams import RetryPolicy, Upstream

from tests.conftest import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A TCP server that answers every connection with ``handler``: the misbehaving upstream."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def hangs_up_mid_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
    await writer.drain()
    writer.close()


async def answers_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"this is not HTTP at all\r\n\r\n")
    await writer.drain()
    writer.close()


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await asyncio.sleep(5)
    writer.close()


async def echoes_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await _read_request(reader)
    body = head.split(b" ", 2)[1]  # the request target, byte for byte
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


def _upstream(base_url: str, budget: float) -> Upstream:
    """An upstream without retries, so each failure is seen once."""
    return Upstream(
        "probe",
        base_url,
        CircuitBreaker("probe", BreakerPolicy()),
        timeout=budget,
        retry=RetryPolicy(retries=0),
    )


async def _call(base_url: str, *, budget: float = 2.0, **kwargs: object) -> ProblemError:
    upstream = _upstream(base_url, budget)
    try:
        with pytest.raises(ProblemError) as caught:
            await upstream.send("GET", "/x", **kwargs)  # type: ignore[arg-type]
    finally:
        await upstream.aclose()
    return caught.value


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        getattr(r, "error", "")
        for r in caplog.records
        if getattr(r, "event", None) == "upstream_error"
    ]


async def test_nothing_listening_is_a_connect_error_and_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="cnop"):
        problem = await _call(f"http://127.0.0.1:{free_port()}")
    assert problem.status == 503 and "Retry-After" in problem.headers
    assert _errors(caplog) == ["ConnectError"]


@pytest.mark.parametrize(
    ("server", "error"),
    [(hangs_up_mid_answer, "ReadError"), (answers_garbage, "ProtocolError")],
    ids=["connection-lost-mid-answer", "not-http"],
)
async def test_a_broken_answer_is_502_named_for_how_it_broke(
    caplog: pytest.LogCaptureFixture, server: Handler, error: str
) -> None:
    async with raw_server(server) as url:
        with caplog.at_level(logging.INFO, logger="cnop"):
            problem = await _call(url)
    assert problem.status == 502
    assert _errors(caplog) == [error]


async def test_an_answer_past_the_deadline_is_a_timeout_and_504_on_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    async with raw_server(never_answers) as url:
        started = loop.time()
        with caplog.at_level(logging.INFO, logger="cnop"):
            problem = await _call(url, budget=0.3)
        took = loop.time() - started
    assert problem.status == 504
    assert _errors(caplog) == ["TimeoutError"]
    assert took < 1.0, took  # one deadline for the attempt, not one per phase


async def test_path_and_query_go_out_as_received_and_header_bytes_must_be_utf8() -> None:
    async with raw_server(echoes_request) as url:
        upstream = _upstream(url, 2.0)
        try:
            reply = await upstream.send(
                "GET",
                "/assets/a%2Fb",
                query=b"q=%41&x=\xc3\xa9",
                headers={"Accept-Language": "fr-ä".encode()},
            )
            # Never decoded (%2F stays, %41 stays), bytes outside ASCII percent-encoded.
            assert reply.status_code == 200
            assert reply.content == b"/assets/a%2Fb?q=%41&x=%C3%A9"
            with pytest.raises(ProblemError) as caught:
                await upstream.send("GET", "/x", headers={"Accept-Language": b"fr-\xe4"})
            assert caught.value.status == 400
        finally:
            await upstream.aclose()


async def test_idle_connections_are_dropped_before_the_backend_drops_them() -> None:
    """A request sent on a pooled connection just as the backend closes it for idleness fails
    without an answer (a 502 for a login, which is never retried): ours must expire first."""
    upstream = _upstream("http://127.0.0.1:9", 1.0)
    try:
        ours = upstream._client().connector
        assert ours is not None
        backend_idle = uvicorn.Config(app=None).timeout_keep_alive  # what cnop.run serves with
        assert ours._keepalive_timeout < backend_idle / 2
    finally:
        await upstream.aclose()
