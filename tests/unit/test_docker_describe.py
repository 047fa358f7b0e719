"""What `lab status` learns from one container inspect: an OOM kill is named, not left as a bare
exit code 137 (a login burst once took the user service past its 384 MiB limit on Docker)."""

from __future__ import annotations

from types import SimpleNamespace

from scenarios.runtime.docker import SERVICE_LABEL, _describe


def _container(*, status: str, exit_code: int, oom_killed: bool | None) -> SimpleNamespace:
    return SimpleNamespace(
        id="c0ffee",
        name="/cnop-lab-user-1",
        state=SimpleNamespace(
            status=status, health=None, pid=0, exit_code=exit_code, oom_killed=oom_killed
        ),
        config=SimpleNamespace(labels={SERVICE_LABEL: "user"}),
        network_settings=SimpleNamespace(networks={"backend": object()}),
    )


def test_an_oom_killed_container_is_described_as_such() -> None:
    facts = _describe(_container(status="exited", exit_code=137, oom_killed=True))  # type: ignore[arg-type]
    assert facts["service"] == "user" and facts["name"] == "cnop-lab-user-1"
    assert (facts["state"], facts["exit_code"], facts["oom_killed"]) == ("exited", 137, True)


def test_an_engine_that_does_not_say_reads_as_no_oom_kill() -> None:
    facts = _describe(_container(status="exited", exit_code=1, oom_killed=None))  # type: ignore[arg-type]
    assert facts["oom_killed"] is False
