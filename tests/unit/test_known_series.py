"""Series exported at 0 from start-up: without them ``increase()`` never sees a drill's first
(often only) event, because the series is born with the value already 1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cnop.core.metrics import KnownSeries, init_known_series
from prometheus_client import CollectorRegistry, Counter, Histogram

from tests.conftest import free_port, wait_for_port


def _scrape_after_start(service: str, service_env: dict[str, Any]) -> str:
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNOP_")}
    env.update({f"CNOP_{k.upper()}": str(v) for k, v in service_env.items()})
    env.update({"CNOP_PORT": str(port), "CNOP_METRICS_PORT": str(metrics_port)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnop.run", service],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(metrics_port, timeout=30)
        return httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # still starting up on a busy machine
            proc.kill()
            proc.wait(10)


@pytest.fixture
def scrape(service_env: dict[str, Any]) -> Iterator[Any]:
    yield lambda service: _scrape_after_start(service, service_env)


def test_order_service_lists_its_known_series_at_zero_right_after_start(scrape: Any) -> None:
    text = scrape("order")
    for series in (
        'cnop_orders_total{order_type="market_buy",result="rejected"} 0.0',
        'cnop_orders_total{order_type="market_sell",result="completed"} 0.0',
        'cnop_lock_hold_seconds_bucket{le="10.0",operation="order"} 0.0',
        'cnop_lock_acquisitions_total{operation="order",result="timeout"} 0.0',
        'cnop_transaction_conflicts_total{operation="order"} 0.0',
        'cnop_token_validations_total{result="revoked"} 0.0',
    ):
        assert series in text, series
    # Only what the order service itself does: no gateway series.
    assert "cnop_login_attempts_total{" not in text


def test_gateway_lists_every_upstreams_breaker_series_at_zero(scrape: Any) -> None:
    text = scrape("gateway")
    for upstream in ("user", "inventory", "order", "insights"):
        for src, dst in (("closed", "open"), ("open", "half-open"), ("half-open", "closed")):
            series = (
                "cnop_circuit_breaker_transitions_total"
                f'{{from_state="{src}",to_state="{dst}",upstream="{upstream}"}} 0.0'
            )
            assert series in text, series
        assert f'cnop_upstream_requests_total{{outcome="timeout",upstream="{upstream}"}} 0.0' in (
            text
        )
    assert 'cnop_rate_limit_decisions_total{decision="limited",policy="login_user"} 0.0' in text
    assert 'cnop_login_attempts_total{result="blocked"} 0.0' in text


def test_a_table_entry_expands_literal_joint_and_service_supplied_values() -> None:
    registry = CollectorRegistry()
    moves = Counter("t_moves", "d", ["upstream", "from_state", "to_state"], registry=registry)
    waits = Histogram("t_wait_seconds", "d", ["operation"], registry=registry)
    table = (
        KnownSeries(
            moves, ("gw",), {"upstream": "@ups", "from_state,to_state": (("a", "b"), ("b", "a"))}
        ),
        KnownSeries(waits, ("*",), {"operation": ("order",)}),
    )
    assert init_known_series("gw", {"ups": ("x", "y")}, table) == 5
    assert (
        registry.get_sample_value(
            "t_moves_total", {"upstream": "y", "from_state": "b", "to_state": "a"}
        )
        == 0
    )
    assert (
        registry.get_sample_value(
            "t_moves_total", {"upstream": "x", "from_state": "a", "to_state": "a"}
        )
        is None
    )
    assert registry.get_sample_value("t_wait_seconds_count", {"operation": "order"}) == 0
    assert init_known_series("other", {}, table) == 1  # only the "*" entry
    with pytest.raises(KeyError, match="@ups"):
        init_known_series("gw", {}, table)


def test_the_table_stays_a_few_hundred_series() -> None:
    """Guard against the table growing into thousands of series: a few hundred at most."""
    from cnop.core.metrics import KNOWN_SERIES, _label_sets

    values = {
        "upstreams": ("user", "inventory", "order", "insights"),
        "lock_operations": ("deposit", "withdraw", "claim", "order"),
        "transaction_operations": ("deposit", "withdraw", "claim", "register", "profile"),
        "order_types": ("market_buy", "market_sell", "limit_buy", "limit_sell"),
    }
    started = time.perf_counter()
    total = sum(len(list(_label_sets(k, values))) for k in KNOWN_SERIES)
    assert total < 300 and time.perf_counter() - started < 1


def test_gateway_exports_its_settings_in_force_so_a_drill_reads_what_was_configured(
    service_env: dict[str, Any],
) -> None:
    """A drill compares a measured behaviour with the configured number: the gateway must say
    which numbers it runs with, overrides included, and never a secret."""
    text = _scrape_after_start("gateway", {**service_env, "breaker_consecutive_failures": 7})
    assert 'cnop_setting{name="breaker_consecutive_failures",service="gateway"} 7.0' in text
    assert 'cnop_setting{name="breaker_open_seconds",service="gateway"} 10.0' in text
    assert 'cnop_setting{name="breaker_enabled",service="gateway"} 1.0' in text
    assert 'cnop_setting{name="pool_wait_seconds",service="gateway"}' in text  # a property
    assert "jwt_secret" not in text and "internal_secret" not in text


def test_export_settings_keeps_numbers_and_switches_only() -> None:
    from cnop.core.metrics import SETTINGS, export_settings
    from pydantic import BaseModel, SecretStr

    class Demo(BaseModel):
        limit: int = 5
        ratio: float = 0.5
        enabled: bool = False
        name: str = "x"
        token: SecretStr = SecretStr("s")
        origins: list[str] = []

        @property
        def doubled(self) -> float:
            return self.ratio * 2

    assert export_settings("demo", Demo()) == 4
    assert SETTINGS.labels("demo", "limit")._value.get() == 5
    assert SETTINGS.labels("demo", "enabled")._value.get() == 0
    assert SETTINGS.labels("demo", "doubled")._value.get() == 1
