"""The published OpenAPI document: generated from the services, public routes only, and the
checked-in copies (served by the gateway, and docs/) never drift from what the code says."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cnop.openapi import OUTPUTS, REGENERATE, render
from cnop.services.gateway.routes import API_PREFIX, ROUTES


@pytest.fixture(scope="module")
def document() -> dict:
    # In a child process: building the services' apps configures logging process-wide.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cnop.openapi import build_document, render; "
            "print(render(build_document()), end='')",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def test_the_checked_in_copies_are_what_the_code_generates(document: dict) -> None:
    text = render(document)
    for path in OUTPUTS:
        assert path.exists() and path.read_text(encoding="utf-8") == text, (
            f"{path} is stale: regenerate it with `{REGENERATE}` and commit the result"
        )


def test_every_public_route_and_nothing_else(document: dict) -> None:
    operations = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    expected = {(m, API_PREFIX + r.path) for r in ROUTES for m in r.methods} | {("GET", "/health")}
    assert operations == expected
    text = json.dumps(document)
    for internal in ("/validate", "/health/ready", "/metrics", "HTTPValidationError"):
        assert internal not in text, internal


def test_tokens_where_the_gateway_checks_them_and_problems_for_every_error(
    document: dict,
) -> None:
    assert document["openapi"] == "3.1.0"
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for route in ROUTES:
        for method in route.methods:
            op = document["paths"][API_PREFIX + route.path][method.lower()]
            assert ("security" in op) == route.auth, (method, route.path)
            codes = set(op["responses"])
            assert {"429", "502", "503", "504"} <= codes
            if route.auth:
                assert "401" in codes, (method, route.path)
            assert "500" not in codes  # a 500 is a bug, never part of the API
            for code, response in op["responses"].items():
                if int(code) >= 400:
                    assert response == {"$ref": f"#/components/responses/Problem{code}"}
    limited = document["components"]["responses"]["Problem429"]
    assert limited["headers"]["Retry-After"]["required"] is True
    assert "RateLimit-Remaining" in limited["headers"]
    assert "application/problem+json" in limited["content"]


def test_money_leaves_as_strings(document: dict) -> None:
    schemas = document["components"]["schemas"]
    for name, field in (
        ("Balance", "current_balance"),
        ("Order", "total_amount"),
        ("Order", "price"),
        ("Portfolio", "total_value"),
        ("AssetSummary", "price_usd"),
    ):
        assert schemas[name]["properties"][field]["type"] == "string", (name, field)


def test_links_point_at_real_operations(document: dict) -> None:
    ids = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    order = document["paths"][API_PREFIX + "/orders"]["post"]["responses"]["201"]["links"]
    assert order["GetOrder"]["operationId"] == "get_orders_order_id"
    for ops in document["paths"].values():
        for op in ops.values():
            for response in op["responses"].values():
                for link in response.get("links", {}).values():
                    assert link["operationId"] in ids
