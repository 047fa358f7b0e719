"""A reference circuit breaker, replayed over what one client saw, to grade a real one.

A drill that sends one call at a time through the gateway sees every outcome the gateway's
breaker records for that upstream, in the same order. Replaying them through the contract's
rules with the *configured* numbers predicts, call by call, whether the next one must be
refused (503, the open breaker) or let through; each answer that differs is a mismatch.

When an open breaker lets a call through again depends on its own clock: it opened between the
opening call's sending and its answer, so a call sent more than ``open_seconds`` after that
answer must be let through (a trial), one sent before ``open_seconds`` after the sending must be
refused, and in between (a few milliseconds, plus ``CLOCK_SLACK_S``) either is right and the
answer decides. Everything else is predicted: opening on ``consecutive_failures`` in a row or
on a failure share of at least ``failure_rate`` over the last ``window`` calls (once
``min_calls`` are in it), at most ``half_open_calls`` trials, reopening at the first failed
trial, closing after that many successes. The window is assumed full of successes when the
replay starts (a closed breaker whose history the drill did not see); drills make their first
``window`` calls succeed or stay below the rule, so the assumption never decides a prediction.

A call sent before the previous one was answered may have been recorded by the breaker in
either order; its prediction is skipped (``overlapping``), its outcome is still replayed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BreakerRules", "Replay", "replay_breaker"]

REFUSED = 503
MAX_SHOWN = 10
CLOCK_SLACK_S = 0.05  # client and gateway read the same clock; this is scheduling, not drift


@dataclass(frozen=True)
class BreakerRules:
    failure_rate: float
    window: float
    min_calls: float
    consecutive_failures: float
    half_open_calls: float
    open_seconds: float


@dataclass
class Replay:
    calls: int = 0
    openings: int = 0
    reopenings: int = 0
    closings: int = 0
    overlapping: int = 0
    trials: list[int] = field(default_factory=list)  # calls admitted per half-open round
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    def evidence(self) -> dict[str, Any]:
        return {
            "calls_replayed": self.calls,
            "predicted_openings": self.openings,
            "predicted_reopenings": self.reopenings,
            "predicted_closings": self.closings,
            "trials_per_half_open": self.trials,
            "overlapping_calls_skipped": self.overlapping,
            "mismatches": self.mismatches[:MAX_SHOWN],
        }


def replay_breaker(
    calls: list[tuple[float, float, int]], rules: BreakerRules, failures: set[int]
) -> Replay:
    """``calls``: (sent at, latency, status) in any order; ``failures``: the statuses the
    breaker counts as failures (a status of 0, no answer, counts as one too)."""
    out = Replay()
    size = max(1, int(rules.window))
    results: deque[bool] = deque([True] * size, maxlen=size)
    consecutive = 0
    state = "closed"
    trials = ok = 0
    opened = (0.0, 0.0)  # the call that opened the breaker: sent, answered
    previous_answered = float("-inf")
    ordered = sorted(calls)
    for index, (sent, latency, status) in enumerate(ordered):
        out.calls += 1
        refused = status == REFUSED
        failed = status == 0 or (status in failures and not refused)
        overlapping = sent < previous_answered
        previous_answered = max(previous_answered, sent + latency)
        expect: bool | None = state == "open"  # a refusal? None: either is right
        if state == "open":
            if sent > opened[1] + rules.open_seconds + CLOCK_SLACK_S:
                expect = False
            elif sent >= opened[0] + rules.open_seconds - CLOCK_SLACK_S:
                expect = None
            if not refused:
                state, trials, ok = "half-open", 0, 0  # the open time ran out
                out.trials.append(0)
        if overlapping:
            out.overlapping += 1
        elif expect is not None and refused != expect:
            out.mismatches.append(
                {
                    "call": index + 1,
                    "sent_after_s": round(sent - ordered[0][0], 3),
                    "status": status,
                    "expected": "503 (breaker open)" if expect else "let through",
                    "model_state": state,
                }
            )
        if refused:
            continue
        if state == "half-open":
            trials += 1
            out.trials[-1] = trials
            if failed:
                state, opened = "open", (sent, sent + latency)
                out.reopenings += 1
            else:
                ok += 1
                if ok >= rules.half_open_calls:
                    state = "closed"
                    out.closings += 1
                    results.clear()
                    consecutive = 0
            continue
        results.append(not failed)
        consecutive = consecutive + 1 if failed else 0
        share = results.count(False) / len(results)
        if consecutive >= rules.consecutive_failures or (
            len(results) >= rules.min_calls and share >= rules.failure_rate
        ):
            state, opened = "open", (sent, sent + latency)
            out.openings += 1
    return out
