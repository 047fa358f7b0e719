"""The public API's OpenAPI document, as the gateway serves it at ``GET /api/v1/openapi.json``.

The document is generated from the services' own schemas by ``python -m cnop.openapi`` and ships
inside this package, so the gateway serves it without importing any other service. It is read
once per app; a missing file is a broken build and stops the gateway at start-up.
"""

from __future__ import annotations

from importlib import resources

from cnop.services.gateway.routes import API_PREFIX

__all__ = ["DOCUMENT_FILE", "OPENAPI_PATH", "load_document"]

OPENAPI_PATH = API_PREFIX + "/openapi.json"
DOCUMENT_FILE = "openapi.json"


def load_document() -> bytes:
    return (resources.files(__package__) / DOCUMENT_FILE).read_bytes()
