"""The circuit breaker's state machine, driven by an injected clock (no sleeping)."""

from __future__ import annotations

import itertools
import logging

import pytest
from cnop.core.breaker import BreakerOpenError, BreakerPolicy, CircuitBreaker, State
from prometheus_client import REGISTRY

_names = itertools.count()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(**policy: float | int | bool) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    # A fresh upstream name per breaker keeps the global metrics of tests apart.
    return CircuitBreaker(f"unit-{next(_names)}", BreakerPolicy(**policy), clock), clock


def call(breaker: CircuitBreaker, success: bool) -> None:
    ticket = breaker.before_call()
    breaker.record(success, ticket)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def open_breaker(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.policy.consecutive_failures):
        call(breaker, False)
    assert breaker.state is State.OPEN


def test_successes_keep_it_closed() -> None:
    breaker, _ = make()
    for _ in range(100):
        call(breaker, True)
    assert breaker.state is State.CLOSED


def test_consecutive_failures_open_it_before_min_calls() -> None:
    breaker, _ = make()
    for _ in range(4):
        call(breaker, False)
    assert breaker.state is State.CLOSED
    call(breaker, False)
    assert breaker.state is State.OPEN


def test_a_success_resets_the_consecutive_count() -> None:
    breaker, _ = make(min_calls=100)
    for _ in range(3):
        for _ in range(4):
            call(breaker, False)
        call(breaker, True)
    assert breaker.state is State.CLOSED


def test_failure_rate_needs_min_calls() -> None:
    breaker, _ = make(consecutive_failures=1000)
    for _ in range(9):
        call(breaker, False)
    assert breaker.state is State.CLOSED  # 100% failures, but only 9 calls
    call(breaker, False)
    assert breaker.state is State.OPEN


def test_failure_rate_opens_at_exactly_half() -> None:
    breaker, _ = make()
    for i in range(9):
        call(breaker, i % 2 == 1)  # F S F S ... : 5 failures in 9 calls
        assert breaker.state is State.CLOSED
    call(breaker, True)  # 5 of 10 = 50%
    assert breaker.state is State.OPEN


def test_below_the_rate_stays_closed() -> None:
    breaker, _ = make()
    for i in range(20):
        call(breaker, i % 5 < 3)  # S S S F F ...: never more than 40% failures
    assert breaker.state is State.CLOSED


def test_the_rate_is_over_the_last_window_calls_only() -> None:
    breaker, _ = make(consecutive_failures=1000)
    for _ in range(20):
        call(breaker, True)
    for _ in range(9):
        call(breaker, False)
    assert breaker.state is State.CLOSED  # 9 of the last 20
    call(breaker, False)
    # 10 of the last 20 = 50%; counting all 30 calls (33%) would have kept it closed.
    assert breaker.state is State.OPEN


def test_open_rejects_without_calling_and_says_when_to_retry() -> None:
    breaker, clock = make(open_seconds=10)
    open_breaker(breaker)
    before = metric("cnop_circuit_breaker_rejections_total", upstream=breaker.upstream)
    clock.advance(4)
    with pytest.raises(BreakerOpenError) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(6)
    assert info.value.upstream == breaker.upstream
    clock.advance(5.999)
    with pytest.raises(BreakerOpenError):
        breaker.before_call()
    assert breaker.state is State.OPEN
    assert metric("cnop_circuit_breaker_rejections_total", upstream=breaker.upstream) == before + 2


def test_stragglers_while_open_change_nothing() -> None:
    breaker, clock = make()
    open_breaker(breaker)
    for _ in range(20):
        breaker.record(True)
    assert breaker.state is State.OPEN
    clock.advance(9.9)
    with pytest.raises(BreakerOpenError):
        breaker.before_call()


def test_half_open_admits_three_trials_and_closes_when_all_succeed() -> None:
    breaker, clock = make(open_seconds=10, half_open_calls=3)
    open_breaker(breaker)
    clock.advance(10)
    tickets = [breaker.before_call() for _ in range(3)]
    assert breaker.state is State.HALF_OPEN
    with pytest.raises(BreakerOpenError):
        breaker.before_call()  # the trial budget is spent
    breaker.record(True, tickets[0])
    breaker.record(True, tickets[1])
    assert breaker.state is State.HALF_OPEN
    breaker.record(True, tickets[2])
    assert breaker.state is State.CLOSED
    # Closed again with a clean slate: four failures do not reopen it.
    for _ in range(4):
        call(breaker, False)
    assert breaker.state is State.CLOSED


def test_a_failed_trial_reopens_and_restarts_the_timer() -> None:
    breaker, clock = make(open_seconds=10)
    open_breaker(breaker)
    clock.advance(10)
    first = breaker.before_call()
    second = breaker.before_call()
    breaker.record(True, first)
    breaker.record(False, second)
    assert breaker.state is State.OPEN
    clock.advance(9.5)
    with pytest.raises(BreakerOpenError) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    breaker.before_call()
    assert breaker.state is State.HALF_OPEN


def test_a_straggler_from_before_the_opening_is_not_a_trial() -> None:
    breaker, clock = make(open_seconds=10, half_open_calls=3)
    slow = [breaker.before_call() for _ in range(3)]  # admitted while closed, still running
    open_breaker(breaker)
    clock.advance(10)
    trial = breaker.before_call()
    for ticket in slow:
        breaker.record(True, ticket)  # they finish now: they say nothing about recovery
    assert breaker.state is State.HALF_OPEN
    breaker.record(False, slow[0])  # nor does a late failure reopen it
    assert breaker.state is State.HALF_OPEN
    breaker.record(True, trial)
    assert breaker.state is State.HALF_OPEN  # one trial of three so far


def test_trials_that_never_report_do_not_wedge_it_half_open() -> None:
    breaker, clock = make(open_seconds=10, half_open_calls=3)
    open_breaker(breaker)
    clock.advance(10)
    for _ in range(3):
        breaker.before_call()  # callers cancelled: no result ever comes back
    clock.advance(9)
    with pytest.raises(BreakerOpenError):
        breaker.before_call()
    clock.advance(1)  # the trials are overdue: treated as failed, the breaker opens again
    with pytest.raises(BreakerOpenError):
        breaker.before_call()
    assert breaker.state is State.OPEN
    clock.advance(10)
    breaker.before_call()  # fresh trials
    assert breaker.state is State.HALF_OPEN


def test_precheck_refuses_only_when_certain_and_claims_no_trial() -> None:
    breaker, clock = make(open_seconds=10, half_open_calls=1)
    breaker.precheck()  # closed: fine
    open_breaker(breaker)
    with pytest.raises(BreakerOpenError):
        breaker.precheck()
    clock.advance(10)
    breaker.precheck()  # the open period is over: the next call is a trial
    breaker.precheck()
    assert breaker.state is State.OPEN  # precheck moved nothing
    ticket = breaker.before_call()
    breaker.record(True, ticket)
    assert breaker.state is State.CLOSED


def test_disabled_breaker_never_opens_nor_rejects() -> None:
    breaker, _ = make(enabled=False)
    for _ in range(50):
        call(breaker, False)
    assert breaker.state is State.CLOSED
    breaker.precheck()


def test_transitions_update_the_gauge_the_counter_and_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker, clock = make(open_seconds=10, half_open_calls=1)
    name = breaker.upstream

    def transitions(src: str, dst: str) -> float:
        return metric(
            "cnop_circuit_breaker_transitions_total",
            upstream=name,
            from_state=src,
            to_state=dst,
        )

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("cnop_circuit_breaker_state", {"upstream": name})

    assert gauge() == 0
    with caplog.at_level(logging.INFO, logger="cnop"):
        open_breaker(breaker)
        assert gauge() == 1
        clock.advance(10)
        call(breaker, False)  # half-open, trial fails, open again
        clock.advance(10)
        call(breaker, True)  # half-open, trial succeeds, closed
    assert gauge() == 0
    assert transitions("closed", "open") == 1
    assert transitions("open", "half-open") == 2
    assert transitions("half-open", "open") == 1
    assert transitions("half-open", "closed") == 1
    events = [
        (r.from_state, r.to_state)  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "event", None) == "circuit_state_changed"
        and getattr(r, "upstream", None) == name
    ]
    assert events == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]


def test_a_released_ticket_gives_its_half_open_trial_back_without_a_verdict() -> None:
    breaker, clock = make(half_open_calls=2, open_seconds=5)
    open_breaker(breaker)
    clock.advance(5)
    first = breaker.before_call()
    second = breaker.before_call()
    with pytest.raises(BreakerOpenError):
        breaker.before_call()  # both trials are out
    breaker.release(second)  # it never reached the upstream (our own pool was full)
    assert breaker.state is State.HALF_OPEN
    third = breaker.before_call()  # its trial slot went to the next caller
    breaker.record(True, first)
    breaker.record(True, third)
    assert breaker.state is State.CLOSED


def test_released_tickets_never_count_while_closed() -> None:
    breaker, _ = make(consecutive_failures=2, min_calls=100)
    call(breaker, False)
    for _ in range(10):
        breaker.release(breaker.before_call())
    assert breaker.state is State.CLOSED
    call(breaker, True)
    call(breaker, False)
    assert breaker.state is State.CLOSED  # the releases did not make two failures "in a row"
