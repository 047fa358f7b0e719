"""Generates the public API's OpenAPI 3.1 document: ``python -m cnop.openapi [--check]``.

The document is what a client of the gateway can rely on, assembled from the services' own
FastAPI schemas (so it cannot drift from the code that validates requests and renders responses):

1. each backend's app is built with dev settings and asked for ``app.openapi()``;
2. only the operations in the gateway's route table (:data:`~cnop.services.gateway.routes.ROUTES`)
   are kept, under ``/api/v1``, plus the gateway's own ``GET /health``: nothing internal (auth's
   ``/validate``, the backends' readiness probes) can appear;
3. schemas are merged; two services using one name for different schemas get their service's
   name as a prefix, so no ``$ref`` silently points at the other service's model;
4. every operation gets what the gateway adds: the bearer scheme where the route needs a token,
   and the RFC 9457 problem responses any request may meet on its way (401, 413, 422, 429,
   502-504, the login guard's 403), with ``Retry-After``/``RateLimit-*`` headers where sent;
5. OpenAPI links (:data:`LINKS`) say which response feeds which request, for stateful clients.

The result is written to the gateway's package (which serves it at ``GET /api/v1/openapi.json``
without importing any service) and to ``docs/openapi.json``; ``--check`` fails when either
differs from what the code generates now. This is a build tool, never imported at run time.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import re
import sys
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from cnop.core.health import health_router
from cnop.services.gateway.published import DOCUMENT_FILE
from cnop.services.gateway.responses import GatewayHealth
from cnop.services.gateway.routes import API_PREFIX, LOGIN_PATH, ROUTES, UPSTREAMS, Route

__all__ = ["LINKS", "OUTPUTS", "REGENERATE", "build_document", "main", "render"]

JSON = dict[str, Any]

REGENERATE = ".venv/bin/python -m cnop.openapi"
_GATEWAY_PACKAGE = Path(__file__).parent / "services" / "gateway"
OUTPUTS = (
    _GATEWAY_PACKAGE / DOCUMENT_FILE,
    Path(__file__).resolve().parents[2] / "docs" / "openapi.json",
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
SECURITY_SCHEME = "bearerAuth"
# FastAPI's own validation schemas: the platform answers 422 with a problem document instead.
_FASTAPI_VALIDATION = frozenset({"HTTPValidationError", "ValidationError"})

# What each error status means; the services declare which of them their routes answer.
_REASONS = {
    401: "The bearer token is missing, malformed, expired, revoked or not ours.",
    403: "Forbidden: logins from this address are blocked for a while, or the token may not.",
    404: "No such resource (a path parameter naming another path is one).",
    409: "A conflict: a duplicate, or a concurrent change to the account (retry after a while).",
    413: "The request body is larger than the gateway accepts (1 MiB by default).",
    422: "The input breaks a rule of the contract; `errors` names the fields.",
    429: "A rate limit (per address, per user, per login target) is exhausted.",
    502: "The service behind the gateway gave an invalid answer.",
    503: "A dependency is unavailable or its circuit breaker is open; retry after a while.",
    504: "The service behind the gateway did not answer in time.",
}
# Headers that always come with a status, and those that may.
_REQUIRED_HEADERS = {429: ("Retry-After",), 503: ("Retry-After",)}
_OPTIONAL_HEADERS = {
    409: ("Retry-After",),
    429: ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"),
}
_HEADERS: JSON = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Limit": {
        "description": "Requests allowed in the current window.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the window resets.",
        "schema": {"type": "integer", "minimum": 0},
    },
}
_PROBLEM_SCHEMA: JSON = {
    "title": "Problem",
    "description": "An RFC 9457 problem document; nothing internal ever appears in one.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": ["string", "null"]},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

# Stateful clients follow these: ("METHOD /path", status) -> link name -> (target, parameters).
LINKS: dict[tuple[str, str], dict[str, tuple[str, dict[str, str]]]] = {
    ("POST /orders", "201"): {
        "GetOrder": ("GET /orders/{order_id}", {"order_id": "$response.body#/data/order_id"}),
        "AssetTrades": (
            "GET /assets/{asset_id}/transactions",
            {"asset_id": "$response.body#/data/asset_id"},
        ),
        "AssetBalance": (
            "GET /balance/asset/{asset_id}",
            {"asset_id": "$response.body#/data/asset_id"},
        ),
    },
    ("GET /orders", "200"): {
        "GetOrder": ("GET /orders/{order_id}", {"order_id": "$response.body#/data/0/order_id"}),
    },
    ("GET /inventory/assets", "200"): {
        "GetAsset": (
            "GET /inventory/assets/{asset_id}",
            {"asset_id": "$response.body#/data/0/asset_id"},
        ),
    },
}


def _service_document(name: str) -> JSON:
    """The service's own schema, from its real app (nothing is started, nothing connects)."""
    module = importlib.import_module(f"cnop.services.{name}.main")
    app = module.create_app(module.Settings(dev_mode=True))
    return app.openapi()


def _gateway_document() -> JSON:
    """``GET /health`` as the gateway declares it; the gateway itself is not built (it serves
    the very file this module writes)."""
    app = FastAPI()
    app.include_router(health_router("gateway", {}, liveness_model=GatewayHealth))
    return app.openapi()


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")
    return f"{method.lower()}_{words}"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rename_refs(v, renames) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            out["$ref"] = "#/components/schemas/" + renames.get(name, name)
        return out
    if isinstance(node, list):
        return [_rename_refs(v, renames) for v in node]
    return node


def _merge_schemas(documents: dict[str, JSON]) -> tuple[JSON, dict[str, dict[str, str]]]:
    """All services' schemas under one namespace; returns them and each service's renames."""
    by_name: dict[str, dict[str, JSON]] = {}
    for service, doc in documents.items():
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            if name not in _FASTAPI_VALIDATION:
                by_name.setdefault(name, {})[service] = schema
    renames: dict[str, dict[str, str]] = {service: {} for service in documents}
    for name, versions in by_name.items():
        if len({json.dumps(v, sort_keys=True) for v in versions.values()}) > 1:
            for service in versions:
                renames[service][name] = service.capitalize() + name
    merged: JSON = {}
    for name, versions in by_name.items():
        for service, schema in versions.items():
            new_name = renames[service].get(name, name)
            merged[new_name] = _rename_refs(schema, renames[service])
    return merged, renames


def _problem_response(status: int) -> JSON:
    """The shared response component for one error status (``#/components/responses/...``)."""
    response: JSON = {
        "description": _REASONS.get(status) or HTTPStatus(status).phrase,
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Problem"},
                        {"properties": {"status": {"const": status}}},
                    ]
                }
            }
        },
    }
    headers = {
        name: {**_HEADERS[name], "required": True} for name in _REQUIRED_HEADERS.get(status, ())
    }
    headers |= {name: _HEADERS[name] for name in _OPTIONAL_HEADERS.get(status, ())}
    if headers:
        response["headers"] = headers
    return response


def _problem_ref(status: int) -> JSON:
    return {"$ref": f"#/components/responses/Problem{status}"}


def _statuses(route: Route, operation: JSON) -> set[int]:
    """What a request on this operation may meet besides the service's own answers."""
    statuses = {429, 502, 503, 504}
    if route.auth:
        statuses.add(401)
    if "requestBody" in operation:
        statuses |= {413, 422}
    if operation.get("parameters"):
        statuses.add(422)
    if "{" in route.path:
        statuses.add(404)
    if route.path == LOGIN_PATH:
        statuses.add(403)  # the login guard's address block
    return statuses


def _public_operation(route: Route, method: str, operation: JSON, renames: dict[str, str]) -> JSON:
    op = _rename_refs(copy.deepcopy(operation), renames)
    op["operationId"] = _operation_id(method, route.path)
    op["tags"] = [route.upstream]
    declared = op.get("responses", {})
    responses: JSON = {code: r for code, r in declared.items() if int(code) < 400}
    errors = {int(code) for code in declared if int(code) >= 400}
    for status in sorted(errors | _statuses(route, op)):
        responses[str(status)] = _problem_ref(status)
    op["responses"] = responses
    if route.auth:
        op["security"] = [{SECURITY_SCHEME: []}]
    return op


def _add_links(paths: JSON) -> None:
    for (source, status), links in LINKS.items():
        method, path = source.split(" ", 1)
        response = paths[API_PREFIX + path][method.lower()]["responses"][status]
        response["links"] = {
            name: {"operationId": _operation_id(*target.split(" ", 1)), "parameters": params}
            for name, (target, params) in links.items()
        }


def _reachable(roots: Any, schemas: JSON) -> JSON:
    """Only the schemas the public operations use (internal routes' models stay out)."""
    seen: set[str] = set()
    todo = [r.rsplit("/", 1)[1] for r in _refs(roots) if r.startswith("#/components/schemas/")]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [r.rsplit("/", 1)[1] for r in _refs(schemas[name]) if "/schemas/" in r]
    return {name: schemas[name] for name in sorted(seen)}


def _used_problems(paths: JSON) -> list[int]:
    prefix = "#/components/responses/Problem"
    return sorted({int(r.removeprefix(prefix)) for r in _refs(paths) if r.startswith(prefix)})


def build_document() -> JSON:
    documents = {name: _service_document(name) for name in UPSTREAMS}
    documents["gateway"] = _gateway_document()
    schemas, renames = _merge_schemas(documents)
    schemas["Problem"] = _PROBLEM_SCHEMA

    paths: JSON = {}
    for route in ROUTES:
        service_paths = documents[route.upstream]["paths"]
        for method in sorted(route.methods):
            operation = service_paths.get(route.path, {}).get(method.lower())
            if operation is None:
                raise LookupError(
                    f"the gateway routes {method} {route.path}, {route.upstream} lacks it"
                )
            public = _public_operation(route, method, operation, renames[route.upstream])
            paths.setdefault(API_PREFIX + route.path, {})[method.lower()] = public
    health = copy.deepcopy(documents["gateway"]["paths"]["/health"]["get"])
    health["operationId"] = "get_health"
    health["tags"] = ["gateway"]
    health["summary"] = "Gateway health"
    health["description"] = "The gateway's own liveness, its breakers and Redis; never limited."
    paths["/health"] = {"get": _rename_refs(health, renames["gateway"])}
    _add_links(paths)

    problems = {f"Problem{status}": _problem_response(status) for status in _used_problems(paths)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CNOP public API",
            "version": "1",
            "description": (
                "Everything the gateway serves under /api/v1 (and GET /health). Errors are RFC "
                "9457 problem documents; money and quantities are JSON strings."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _reachable([paths, problems], schemas),
            "responses": problems,
            "securitySchemes": {
                SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def render(document: JSON) -> str:
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnop.openapi", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="fail when a written copy is stale")
    args = parser.parse_args(argv)
    text = render(build_document())
    if args.check:
        stale = [str(p) for p in OUTPUTS if not p.exists() or p.read_text(encoding="utf-8") != text]
        if stale:
            print(f"stale OpenAPI document: {', '.join(stale)}; regenerate with {REGENERATE}")
            return 1
        return 0
    for path in OUTPUTS:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
