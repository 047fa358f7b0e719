"""A circuit breaker with the contract's semantics, one instance per upstream.

Opens when the failure rate over the last ``window`` calls reaches ``failure_rate`` (with at
least ``min_calls`` calls), or after ``consecutive_failures`` failures in a row. Stays open for
``open_seconds``, then lets ``half_open_calls`` trial calls through: all succeed, it closes; any
fails, it opens again. Libraries such as pybreaker lack the rate window and trial budget, and the
state machine is small enough to test exhaustively, so it is written here.

In-memory per process: the gateway runs one process per replica, and each replica protecting
itself is the usual design (Resilience4j, Envoy outlier detection).

Calls are slow and overlap state changes, so :meth:`CircuitBreaker.before_call` hands out a ticket
(the state's generation) and :meth:`CircuitBreaker.record` ignores a result whose ticket belongs
to an earlier state: a straggler admitted while closed must not count as a half-open trial. A
half-open trial that never reports (its caller was cancelled) counts as failed once
``open_seconds`` pass, so the breaker cannot stay half-open, refusing everything, forever.

A call that was admitted but never reached the upstream (the caller's own connection pool was
full, or its own deadline ran out first) says nothing about the upstream: :meth:`release` gives
its ticket back without a verdict, and a half-open trial slot it held goes to the next caller.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from cnop.core.logging import log_event
from cnop.core.metrics import BREAKER_REJECTIONS, BREAKER_STATE, BREAKER_TRANSITIONS


class State(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class BreakerPolicy:
    failure_rate: float = 0.5
    window: int = 20
    min_calls: int = 10
    consecutive_failures: int = 5
    open_seconds: float = 10.0
    half_open_calls: int = 3
    enabled: bool = True


class BreakerOpenError(Exception):
    def __init__(self, upstream: str, retry_after: float) -> None:
        super().__init__(f"circuit for {upstream} is open")
        self.upstream = upstream
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(
        self, upstream: str, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.upstream = upstream
        self.policy = policy
        self._clock = clock
        self.state = State.CLOSED
        self._results: deque[bool] = deque(maxlen=policy.window)
        self._consecutive = 0
        self._opened_at = 0.0
        self._trials_started = 0
        self._trials_ok = 0
        self._half_open_at = 0.0
        self._generation = 0
        BREAKER_STATE.labels(upstream).set(State.CLOSED)

    def retry_after(self) -> float:
        return max(0.0, self._opened_at + self.policy.open_seconds - self._clock())

    def precheck(self) -> None:
        """Refuse early, without claiming a half-open trial, when a call is certain to be refused.

        Lets a caller skip expensive work (the gateway's token check) for an upstream that is
        open anyway; the real admission is still :meth:`before_call`.
        """
        if self.policy.enabled and self.state is State.OPEN and self.retry_after() > 0:
            self._reject()

    def before_call(self) -> int:
        """Admit a call or raise :class:`BreakerOpenError` without touching the upstream.

        Returns a ticket to hand back to :meth:`record`.
        """
        if not self.policy.enabled:
            return self._generation
        if self.state is State.OPEN:
            if self._clock() - self._opened_at >= self.policy.open_seconds:
                self._transition(State.HALF_OPEN)
            else:
                self._reject()
        if self.state is State.HALF_OPEN:
            if self._trials_started >= self.policy.half_open_calls:
                if self._clock() - self._half_open_at >= self.policy.open_seconds:
                    # Trials that never reported are as good as failed: open again, so a
                    # later call gets fresh trials instead of a breaker stuck half-open.
                    self._transition(State.OPEN)
                self._reject()
            self._trials_started += 1
        return self._generation

    def record(self, success: bool, ticket: int | None = None) -> None:
        """Report a call's outcome; ``ticket`` (from :meth:`before_call`) drops stale results."""
        if not self.policy.enabled:
            return
        if ticket is not None and ticket != self._generation:
            return  # admitted under an earlier state: says nothing about the current one
        if self.state is State.HALF_OPEN:
            if not success:
                self._transition(State.OPEN)
                return
            self._trials_ok += 1
            if self._trials_ok >= self.policy.half_open_calls:
                self._transition(State.CLOSED)
            return
        if self.state is State.OPEN:
            return  # a straggler from before the breaker opened
        self._results.append(success)
        self._consecutive = 0 if success else self._consecutive + 1
        if self._should_open():
            self._transition(State.OPEN)

    def release(self, ticket: int) -> None:
        """Hand back a ticket whose call never reached the upstream: no verdict, no trial used."""
        if not self.policy.enabled or ticket != self._generation:
            return
        if self.state is State.HALF_OPEN and self._trials_started > self._trials_ok:
            self._trials_started -= 1

    def _should_open(self) -> bool:
        p = self.policy
        if self._consecutive >= p.consecutive_failures:
            return True
        calls = len(self._results)
        if calls < p.min_calls:
            return False
        failures = calls - sum(self._results)
        return failures / calls >= p.failure_rate

    def _reject(self) -> None:
        BREAKER_REJECTIONS.labels(self.upstream).inc()
        raise BreakerOpenError(self.upstream, self.retry_after() or self.policy.open_seconds)

    def _transition(self, new: State) -> None:
        old = self.state
        self.state = new
        self._generation += 1
        if new is State.OPEN:
            self._opened_at = self._clock()
        if new is State.HALF_OPEN:
            self._half_open_at = self._clock()
            self._trials_started = 0
            self._trials_ok = 0
        if new is State.CLOSED:
            self._results.clear()
            self._consecutive = 0
        BREAKER_STATE.labels(self.upstream).set(new)
        BREAKER_TRANSITIONS.labels(self.upstream, old.label, new.label).inc()
        log_event(
            "circuit_state_changed",
            logging.WARNING if new is State.OPEN else logging.INFO,
            upstream=self.upstream,
            from_state=old.label,
            to_state=new.label,
        )
