"""Schemathesis hooks for ``lab scan --engine schemathesis`` (loaded with SCHEMATHESIS_HOOKS).

They authenticate every generated call as the scan's owner with a fresh bearer token, logged in
from the setup address (``CNOP_SCAN_LOGIN_SOURCE``) so the fuzzer's own bad logins never get those
logins blocked. ``POST /auth/logout`` gets a token of its own: logging it out revokes nothing the
other calls use. Read only by the schemathesis process the engine starts.
"""

from __future__ import annotations

import os
import time

import httpx
import schemathesis


def _login() -> str:
    """A fresh token; a 429 or 503 (the platform shedding load, with Retry-After) is waited
    out a few times rather than counted as the scanner failing to authenticate."""
    source = os.environ.get("CNOP_SCAN_LOGIN_SOURCE") or None
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=15) as client:
        for _ in range(6):
            r = client.post(
                os.environ["CNOP_SCAN_LOGIN_URL"],
                json={
                    "username": os.environ["CNOP_SCAN_USERNAME"],
                    "password": os.environ["CNOP_SCAN_PASSWORD"],
                },
            )
            retry = r.headers.get("Retry-After", "")
            if r.status_code in (429, 503) and retry.isdigit() and int(retry) <= 30:
                time.sleep(max(1, int(retry)))
                continue
            break
    r.raise_for_status()
    return str(r.json()["access_token"])


@schemathesis.auth(refresh_interval=120)
class ScanOwner:
    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        return _login()

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        token = _login() if case.operation.path.endswith("/auth/logout") else data
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
