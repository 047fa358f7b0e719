"""The flaw catalogue (security/flaws.yaml): every flaw names real, typed, documented settings,
and the flaw layer in state.json is composed, switched and recorded as promised."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cnop.core.settings import ServiceSettings
from cnop.services.auth.main import Settings as AuthSettings
from cnop.services.gateway.settings import Settings as GatewaySettings
from cnop.services.insights.settings import Settings as InsightsSettings
from cnop.services.inventory.settings import Settings as InventorySettings
from cnop.services.order.settings import Settings as OrderSettings
from cnop.services.user.settings import Settings as UserSettings
from typer.testing import CliRunner

from scenarios.config import REPO_ROOT, LabConfig
from scenarios.flaws import FlawError, flaw_layer, get_flaw, load_flaws
from scenarios.provenance import flaws_in_force, settings_in_force
from scenarios.runtime.base import flaw_env
from scenarios.runtime.local import LocalRuntime

SETTINGS: dict[str, type[ServiceSettings]] = {
    "gateway": GatewaySettings,
    "auth": AuthSettings,
    "user": UserSettings,
    "order": OrderSettings,
    "inventory": InventorySettings,
    "insights": InsightsSettings,
}
REQUIRED = (
    "bola",
    "data-exposure",
    "no-limits",
    "verbose-errors",
    "permissive-cors",
    "missing-headers",
    "user-enumeration",
    "trust-any-xff",
)
SECRETS = {
    "CNOP_JWT_SECRET": "j" * 40,
    "CNOP_INTERNAL_SECRET": "i" * 40,
}


def test_the_catalogue_has_every_flaw_the_security_track_promises() -> None:
    flaws = load_flaws()
    assert set(REQUIRED) <= set(flaws)
    assert {"alg-none", "weak-jwt-secret"} & set(flaws)
    for flaw in flaws.values():
        assert flaw.owasp_id.endswith(":2023") and flaw.cwe > 0
        assert flaw.description and flaw.probe.path.startswith("/")


@pytest.mark.parametrize("name", list(load_flaws()))
def test_every_setting_of_a_flaw_is_a_typed_field_that_accepts_its_value(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt CNOP_* name would be ignored by the service (extra="ignore") and open nothing."""
    flaw = get_flaw(name)
    for service, env in flaw.env.items():
        cls = SETTINGS[service]
        shipped = cls(**{k.removeprefix("CNOP_").lower(): v for k, v in SECRETS.items()})
        for key, value in {**SECRETS, **env}.items():
            monkeypatch.setenv(key, value)
        flawed = cls()
        for key in env:
            field = key.removeprefix("CNOP_").lower()
            assert field in cls.model_fields, f"{name}: {service} has no setting {key}"
            assert getattr(flawed, field) != getattr(shipped, field), f"{name}: {key} is a no-op"
        for key in env:
            monkeypatch.delenv(key)


@pytest.mark.parametrize("name", list(load_flaws()))
def test_every_setting_of_a_flaw_is_documented(name: str) -> None:
    settings_doc = (REPO_ROOT / "docs" / "settings.md").read_text()
    security_doc = (REPO_ROOT / "docs" / "flaws.md").read_text()
    flaw = get_flaw(name)
    for env in flaw.env.values():
        for key in env:
            assert f"`{key}`" in settings_doc, f"{key} is not in docs/settings.md"
    assert f"`{name}`" in security_doc, f"{name} is not in docs/flaws.md"


def test_an_unknown_flaw_names_the_closest_one() -> None:
    with pytest.raises(FlawError, match=r"unknown flaw 'bolla'; did you mean bola\?"):
        get_flaw("bolla")
    with pytest.raises(FlawError, match="one of: bola"):
        get_flaw("zzzzzz")


def test_a_broken_catalogue_is_one_line_naming_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "flaws.yaml"
    doc: dict[str, Any] = {
        "flaws": [
            {
                "name": "bad",
                "title": "t",
                "owasp": "API1:2023 X",
                "cwe": 1,
                "description": "d",
                "env": {"nowhere": {"CNOP_X": "1"}},
                "probe": {"path": "/", "open": {}, "closed": {}},
            }
        ]
    }
    bad.write_text(json.dumps(doc))
    with pytest.raises(FlawError, match=r"flaws\.0\.env.*unknown service 'nowhere'"):
        load_flaws(bad)


# --- the flaw layer in state.json -------------------------------------------------------------


def _state(home: Path, **extra: Any) -> LocalRuntime:
    home.mkdir(parents=True, exist_ok=True)
    state = {"runtime": "local", "service_env": {}, "overrides": {}, "components": {}, **extra}
    (home / "state.json").write_text(json.dumps(state))
    return LocalRuntime(LabConfig(home=home))


def test_flaw_settings_sit_between_the_sandbox_env_and_a_drills_reconfigure(
    tmp_path: Path,
) -> None:
    layer = flaw_layer(["bola", "missing-headers"])
    runtime = _state(
        tmp_path / "lab",
        service_env={"CNOP_LOG_LEVEL": "DEBUG", "CNOP_SECURITY_HEADERS_ENABLED": "true"},
        overrides={"order": {"CNOP_ORDER_OWNERSHIP_CHECK_ENABLED": "true"}},
        flaws=layer,
        ports=LabConfig(home=tmp_path / "lab").ports(),
        metrics_ports=LabConfig(home=tmp_path / "lab").metrics_ports(),
        table_prefix="cnop",
        host="127.0.0.1",
    )
    _argv, gateway_env = runtime._command("gateway", runtime._load_state() or {}, "s" * 40)
    _argv, order_env = runtime._command("order", runtime._load_state() or {}, "s" * 40)
    assert gateway_env["CNOP_SECURITY_HEADERS_ENABLED"] == "false"  # the flaw beats the sandbox
    assert gateway_env["CNOP_LOG_LEVEL"] == "DEBUG"
    assert order_env["CNOP_ORDER_OWNERSHIP_CHECK_ENABLED"] == "true"  # a reconfigure beats both
    in_force = runtime.settings_in_force()
    assert in_force["gateway"]["CNOP_SECURITY_HEADERS_ENABLED"] == "false"
    assert sorted(runtime.flaws_in_force()) == ["bola", "missing-headers"]
    assert flaw_env(layer)["order"] == {
        "CNOP_ORDER_OWNERSHIP_CHECK_ENABLED": "false",
        "CNOP_SECURITY_HEADERS_ENABLED": "false",
    }


def test_a_run_records_its_flaws_and_redacts_their_secrets(tmp_path: Path) -> None:
    runtime = _state(tmp_path / "lab", flaws=flaw_layer(["weak-jwt-secret", "bola"]))
    assert flaws_in_force(runtime) == ["bola", "weak-jwt-secret"]
    recorded = settings_in_force(runtime)
    assert recorded["order"]["CNOP_ORDER_OWNERSHIP_CHECK_ENABLED"] == "false"
    assert recorded["user"]["CNOP_JWT_SECRET"] == "<redacted>"
    # The lab's own token minting follows the platform's secret.
    assert runtime.signing_secret() == "secret"


def test_lab_flaws_lists_the_catalogue_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab import app

    monkeypatch.setenv("CNOP_LAB_HOME", str(tmp_path / "none"))
    result = CliRunner().invoke(app, ["flaws", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [f["name"] for f in doc] == list(load_flaws())
    bola = doc[0]
    assert bola["owasp"].startswith("API1:2023") and bola["on"] is False
    assert bola["probe"]["as"] == "user" and bola["env"]["order"]


def test_an_unknown_flaw_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab import app

    monkeypatch.setenv("CNOP_LAB_HOME", str(tmp_path / "none"))
    for args in (["flaw", "on", "bolla"], ["up", "--flaw", "cors"], ["flaw", "off", "xff"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
    result = CliRunner().invoke(app, ["flaw", "on", "bolla"])
    assert "did you mean bola?" in result.output


def test_the_docker_runtime_gives_each_container_its_flaw_settings(tmp_path: Path) -> None:
    """Between the sandbox's settings and a reconfigure's, as in the local runtime."""
    import yaml

    from scenarios.runtime.docker import DockerRuntime

    config = LabConfig(home=tmp_path / "lab", service_env={"CNOP_LOG_LEVEL": "DEBUG"})
    config.home.mkdir(parents=True)
    runtime = DockerRuntime(config, project="flawtest")
    runtime._write_override(
        {
            "flaws": flaw_layer(["missing-headers"]),
            "overrides": {"user": {"CNOP_SECURITY_HEADERS_ENABLED": "true"}},
        }
    )
    services = yaml.safe_load(runtime.override_file.read_text())["services"]
    assert services["gateway"]["environment"]["CNOP_SECURITY_HEADERS_ENABLED"] == "false"
    assert services["gateway"]["environment"]["CNOP_LOG_LEVEL"] == "DEBUG"
    assert services["user"]["environment"]["CNOP_SECURITY_HEADERS_ENABLED"] == "true"
