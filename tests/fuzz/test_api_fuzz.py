"""Schemathesis against a real platform, through the gateway, with a logged-in user.

The OpenAPI links are followed statefully first, while the user still has money to trade (a new
order, then its detail, its asset's trades and holding); then every operation of the published
document is fuzzed (seeded, a bounded number of examples, valid and invalid inputs). Each
response must be no server error and must match the document: status, content type, body schema
and headers. Failures are collected rather than raised, so one run reports every kind of failure
(with a curl line to reproduce it), and the last test fails with that list; it also fails when an
operation was never reached, so the suite cannot pass by generating nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from cnop.services.gateway.published import OPENAPI_PATH
from cnop.services.gateway.routes import ROUTES
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.conftest import DOCUMENT, FuzzRecord, FuzzUser, authenticate
from tests.sandbox import Sandbox

pytestmark = [pytest.mark.fuzz, pytest.mark.e2e]

SEED = 20261127
EXAMPLES_PER_OPERATION = 25  # fuzzing phase; the examples and coverage phases add their own
STATEFUL_SCENARIOS = 15
STATEFUL_STEPS = 8
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Every row of the route table, plus GET /health.
EXPECTED_OPERATIONS = sum(len(r.methods) for r in ROUTES) + 1


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "suppress-health-check": ["all"],
        "request-timeout": 10,
        "generation": {
            "max-examples": EXAMPLES_PER_OPERATION,
            "no-shrink": True,  # a reproducer is enough; shrinking multiplies the run time
            "database": "none",
        },
    }
)
# The checked-in copy (the drift test keeps it equal to the generated one, and
# test_the_gateway_serves_the_checked_in_document to the served one); parametrizing needs it at
# import time, before the sandbox exists, so the base URL is given per call.
SCHEMA = schemathesis.openapi.from_path(DOCUMENT, config=CONFIG)


@pytest.fixture(scope="module")
def published_schema(fuzz_user: FuzzUser) -> schemathesis.BaseSchema:
    authenticate(SCHEMA, fuzz_user)
    return SCHEMA


def test_the_gateway_serves_the_checked_in_document(
    fuzz_sandbox: Sandbox, fuzz_session: requests.Session
) -> None:
    r = fuzz_session.get(fuzz_sandbox.gateway + OPENAPI_PATH, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == json.loads(DOCUMENT.read_text(encoding="utf-8"))
    assert len(list(SCHEMA.get_all_operations())) == EXPECTED_OPERATIONS


def _call_and_record(
    case: schemathesis.Case, session: requests.Session, record: FuzzRecord, base_url: str
) -> schemathesis.Response:
    response = case.call(base_url=base_url, session=session)
    label = case.operation.label
    record.response(label, response.status_code)
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        reproduce = case.as_curl_command(headers=dict(response.request.headers))
        for failure in group.exceptions:
            record.failed(label, failure, response.status_code, reproduce)
    return response


def test_stateful_links(
    published_schema: schemathesis.BaseSchema,
    fuzz_session: requests.Session,
    fuzz_record: FuzzRecord,
    fuzz_sandbox: Sandbox,
) -> None:
    """Sequences that follow the document's links (POST /orders -> GET /orders/{order_id}...)."""
    machine = published_schema.as_state_machine()

    class Links(machine):  # type: ignore[misc,valid-type]
        def call(self, case: schemathesis.Case, **kwargs: Any) -> schemathesis.Response:
            response = _call_and_record(case, fuzz_session, fuzz_record, fuzz_sandbox.gateway)
            fuzz_record.stateful[f"{case.operation.label} {response.status_code}"] += 1
            return response

        def validate_response(self, *args: Any, **kwargs: Any) -> None:
            """Already checked (and recorded) in :meth:`call`."""

    Links.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
    )
    assert fuzz_record.stateful.total() > 0


@SCHEMA.parametrize()
def test_every_operation(
    case: schemathesis.Case,
    published_schema: schemathesis.BaseSchema,
    fuzz_session: requests.Session,
    fuzz_record: FuzzRecord,
    fuzz_sandbox: Sandbox,
) -> None:
    _call_and_record(case, fuzz_session, fuzz_record, fuzz_sandbox.gateway)


def _summary(record: FuzzRecord) -> Iterator[str]:
    for finding in sorted(record.findings.values(), key=lambda f: (f.title, f.operation)):
        head = f"- {finding.title} [{finding.status}] on {finding.operation}"
        yield f"{head}\n    {finding.reproduce}"


def test_fuzzing_found_nothing_and_reached_every_operation(fuzz_record: FuzzRecord) -> None:
    reached = {op for op, statuses in fuzz_record.statuses.items() if set(statuses) - {429}}
    assert len(reached) == EXPECTED_OPERATIONS, (
        f"only {len(reached)} of {EXPECTED_OPERATIONS} operations answered anything but 429: "
        f"{sorted(reached)}"
    )
    # A link was followed: an order placed in a sequence was then read back by its id.
    assert fuzz_record.stateful["GET /api/v1/orders/{order_id} 200"] > 0, dict(fuzz_record.stateful)
    total = sum(fuzz_record.responses.values())
    assert not fuzz_record.findings, (
        f"{len(fuzz_record.findings)} kinds of failure in {total} responses "
        f"({fuzz_record.stateful.total()} in stateful sequences):\n"
        + "\n".join(_summary(fuzz_record))
        + "\nstatuses per operation: "
        + json.dumps({op: dict(s) for op, s in sorted(fuzz_record.statuses.items())})
        + "\nin stateful sequences: "
        + json.dumps(dict(sorted(fuzz_record.stateful.items())))
    )
