"""Consecutive reconfigures restart their services together: a drill's setup that reconfigures
two services, or a selftest that weakens three, waits for one restart, and the undo knows what
is still reconfigured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scenarios.actions import ActionRunner, batches
from scenarios.runtime.base import Runtime
from scenarios.schema import ActionSpec


def spec(action: str, target: str | None = None, **extra: object) -> ActionSpec:
    return ActionSpec.model_validate({"action": action, "target": target, **extra})


class Recording:
    """Stands in for a runtime: what reconfigure_many was asked, call by call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, dict[str, str] | None]] = []

    def reconfigure_many(self, changes: Mapping[str, Mapping[str, str] | None]) -> None:
        self.calls.append({k: dict(v) if v is not None else None for k, v in changes.items()})

    def clear_faults(self, service: str | None = None) -> int:
        return 0


def test_consecutive_reconfigures_form_one_batch_and_other_actions_stay_apart() -> None:
    steps = [
        spec("reconfigure", "order", env={"A": "1"}),
        spec("reconfigure", "gateway", env={"B": "2"}),
        spec("pause", "order"),
        spec("reconfigure", "order", env=None),
        spec("clear_faults"),
        spec("reconfigure", "gateway", env=None),
    ]
    grouped = [[(s.action, s.target) for s in batch] for batch in batches(steps)]
    assert grouped == [
        [("reconfigure", "order"), ("reconfigure", "gateway")],
        [("pause", "order")],
        [("reconfigure", "order")],
        [("clear_faults", None)],
        [("reconfigure", "gateway")],
    ]


def test_a_batch_is_one_restart_and_the_undo_restores_what_is_left_in_one_more() -> None:
    runtime = Recording()
    runner = ActionRunner(runtime=runtime, overlay={"gateway": {"W": "off"}})  # type: ignore[arg-type]
    setup = [
        spec("reconfigure", "order", env={"A": "1"}),
        spec("reconfigure", "gateway", env={"B": "2"}),
    ]
    (batch,) = batches(setup)
    said = runner.run_batch(batch)
    assert "order" in said and "gateway" in said
    # One call for both; the selftest's overlay is kept under the drill's own setting.
    assert runtime.calls == [{"order": {"A": "1"}, "gateway": {"W": "off", "B": "2"}}]
    assert runner.damage.reconfigured == {"order", "gateway"}

    runner.run_batch([spec("reconfigure", "order", env=None)])
    assert runtime.calls[-1] == {"order": None}
    assert runner.damage.reconfigured == {"gateway"}

    assert runner.undo_all() == []
    # Back to defaults, the overlay kept (a weakened run stays weakened until it ends).
    assert runtime.calls[-1] == {"gateway": {"W": "off"}}
    assert runner.damage.reconfigured == set()
    assert len(runtime.calls) == 3


def test_a_settings_layer_restarts_only_what_changes() -> None:
    layer: dict[str, Any] = {"order": {"A": "1"}}
    changes = {"order": None, "gateway": {"B": 2}, "user": None, "auth": None}
    restart = Runtime._set_layer(layer, changes, running={"order", "gateway", "user"})
    # order leaves the layer; gateway joins it (as text); user runs on its defaults already;
    # auth is not running, so it is started again.
    assert restart == ["order", "gateway", "auth"]
    assert layer == {"gateway": {"B": "2"}}
