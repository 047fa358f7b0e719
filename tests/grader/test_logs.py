"""Log checks over a stand-in log source (the runtime's ``log_events``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from grader.evaluate import evaluate
from grader.model import LogsCheck, Phase, RunContext

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


class FakeLogs:
    """Test double of a runtime: events per service, filtered by ``since`` like the real one."""

    def __init__(self, events: dict[str, list[dict[str, Any]]]) -> None:
        self.events = events
        self.asked: list[tuple[str, datetime | None]] = []

    def log_events(self, name: str, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        self.asked.append((name, since))
        for event in self.events.get(name, []):
            if not isinstance(event, dict) or "timestamp" not in event:
                yield event  # the grader must cope with what a real log holds
                continue
            moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            if since is None or moment >= since:
                yield event


EVENTS = {
    "gateway": [
        {"timestamp": at(1), "event": "rate_limited", "policy": "ip"},  # before the phase
        {
            "timestamp": at(12),
            "event": "circuit_state_changed",
            "upstream": "order",
            "from_state": "closed",
            "to_state": "open",
        },
        {"timestamp": at(13), "event": "rate_limited", "policy": "login_ip", "status": 429},
        {"timestamp": at(14), "event": "rate_limited", "policy": "login_user", "status": 429},
        {"timestamp": at(15), "event": "rate_limited", "policy": "user", "status": 429},
        {
            "timestamp": at(22),
            "event": "circuit_state_changed",
            "upstream": "order",
            "from_state": "open",
            "to_state": "half_open",
        },
        {
            "timestamp": at(23),
            "event": "circuit_state_changed",
            "upstream": "order",
            "from_state": "half_open",
            "to_state": "closed",
        },
        "not a dict",
        {"event": "no_timestamp"},
        {"timestamp": at(45), "event": "rate_limited", "policy": "ip"},  # after the phase
    ],
    "order": [
        {"timestamp": at(11), "event": "fault_injected", "fault": "error_rate"},
        {"timestamp": at(20), "event": "fault_cleared", "fault": "error_rate"},
    ],
}


def ctx(logs: Any = None) -> RunContext:
    return RunContext(
        prometheus_url="http://127.0.0.1:9",
        gateway_url="http://127.0.0.1:9",
        phases={
            "drill": Phase(
                name="drill", start=T0 + timedelta(seconds=10), end=T0 + timedelta(seconds=40)
            ),
            "fault": Phase(
                name="fault", start=T0 + timedelta(seconds=10), end=T0 + timedelta(seconds=20)
            ),
        },
        logs=FakeLogs(EVENTS) if logs is None else logs,
    )


def check(**fields: Any) -> LogsCheck:
    return LogsCheck(id="logs-check", title="a log check", **fields)


def test_counts_matching_events_in_the_phase_only() -> None:
    result = evaluate(check(service="gateway", match={"event": "rate_limited"}, count=3), ctx())
    assert result.passed, result.evidence
    assert result.evidence["count"] == 3  # the ones at 1 s and 45 s are outside the drill
    assert len(result.evidence["examples"]) == 3
    too_many = evaluate(check(service="gateway", match={"event": "rate_limited"}, count=4), ctx())
    assert not too_many.passed and too_many.points == 0


def test_list_values_match_any_and_numbers_match_strings() -> None:
    logins = evaluate(
        check(
            service="gateway",
            match={"event": "rate_limited", "policy": ["login_ip", "login_user"]},
            op="==",
            count=2,
        ),
        ctx(),
    )
    assert logins.passed, logins.evidence
    by_status = evaluate(check(service="gateway", match={"status": "429"}, op="==", count=3), ctx())
    assert by_status.passed, by_status.evidence
    none = evaluate(
        check(service="gateway", match={"event": "ip_blocked"}, op="==", count=0), ctx()
    )
    assert none.passed
    absent = evaluate(check(service="gateway", match={"event": "ip_blocked"}), ctx())
    assert not absent.passed and absent.evidence["count"] == 0


def test_examples_are_bounded() -> None:
    many = {"gateway": [{"timestamp": at(12 + i / 10), "event": "rate_limited"} for i in range(40)]}
    result = evaluate(
        check(service="gateway", match={"event": "rate_limited"}), ctx(FakeLogs(many))
    )
    assert result.evidence["count"] == 40 and len(result.evidence["examples"]) == 5


def test_ordering_within_one_service() -> None:
    opened = {"event": "circuit_state_changed", "to_state": "open"}
    closed = {"event": "circuit_state_changed", "to_state": "closed"}
    in_order = evaluate(check(service="gateway", match=opened, before=closed), ctx())
    assert in_order.passed, in_order.evidence
    assert in_order.evidence["ordering"]["result"] == "in order"
    reversed_ = evaluate(check(service="gateway", match=closed, before=opened), ctx())
    assert not reversed_.passed
    assert reversed_.evidence["ordering"]["result"] == "out of order"
    never = evaluate(check(service="gateway", match=opened, before={"event": "ip_blocked"}), ctx())
    assert not never.passed and never.evidence["ordering"]["result"] == "no event matching `before`"


def test_ordering_across_services() -> None:
    opened = {"event": "circuit_state_changed", "to_state": "open"}
    ok = evaluate(
        check(
            service="gateway",
            match=opened,
            window="fault",
            before={"event": "fault_cleared"},
            before_service="order",
        ),
        ctx(),
    )
    assert ok.passed, ok.evidence
    late = evaluate(
        check(
            service="gateway",
            match={"event": "circuit_state_changed", "to_state": "closed"},
            before={"event": "fault_cleared"},
            before_service="order",
        ),
        ctx(),
    )
    assert not late.passed


def test_missing_log_source_is_an_error() -> None:
    base = ctx()
    base.logs = None
    result = evaluate(check(service="gateway", match={"event": "x"}), base)
    assert not result.passed and "no log source" in result.error
