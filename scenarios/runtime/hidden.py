"""Hidden settings: a challenge assignment's weakened settings, applied but not shown.

``lab up --assignment FILE`` (a challenge) leaves two files in the sandbox's home: the
assignment's sealed challenge (``challenge.json``: the assignment's name and key id and a Fernet
token, AES-128-CBC with HMAC-SHA256) and the key that opens it (``challenge_key``, mode 0600).
Every runtime adds the settings inside to a service's environment whenever it starts one, under
the student's own ``lab config`` settings and a drill's reconfiguration, so a fix the student
makes wins over the hidden setting it fixes. Nothing prints them, state.json does not hold them,
and a run records only the token.

This keeps the answer out of plain sight, nothing more: the key sits next to the token, and the
services' environments are the operating system's to show (``/proc/PID/environ``, ``docker
inspect``). docs/instructors.md says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from scenarios.runtime.base import RuntimeError_

__all__ = ["active_challenge", "hidden_env", "install_challenge", "open_token", "remove_challenge"]

CHALLENGE_FILE = "challenge.json"
KEY_FILE = "challenge_key"


def open_token(token: str, key: str) -> dict[str, Any]:
    """The challenge inside a token: ``{"settings": {service: {KEY: VALUE}}, ...}``."""
    try:
        payload = json.loads(Fernet(key.encode("ascii")).decrypt(token.encode("ascii")))
    except (InvalidToken, ValueError, TypeError) as exc:
        raise RuntimeError_(
            "the challenge does not open with its key (the assignment file was changed?)"
        ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("settings", {}), dict):
        raise RuntimeError_("the challenge is not a challenge (no settings inside)")
    return payload


def install_challenge(home: Path, ref: dict[str, str], token: str, key: str) -> None:
    """Leave a challenge in a sandbox that is not running yet; checks that it opens."""
    open_token(token, key)
    home.mkdir(parents=True, exist_ok=True)
    remove_challenge(home)
    fd = os.open(home / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    body = {"assignment": dict(ref), "token": token}
    (home / CHALLENGE_FILE).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def remove_challenge(home: Path) -> None:
    for name in (CHALLENGE_FILE, KEY_FILE):
        (home / name).unlink(missing_ok=True)


def active_challenge(home: Path) -> dict[str, Any] | None:
    """The sandbox's challenge as a run records it (assignment and token, never the key)."""
    try:
        body = json.loads((home / CHALLENGE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RuntimeError_(f"{home / CHALLENGE_FILE} is unreadable ({exc})") from exc
    if not isinstance(body, dict) or not isinstance(body.get("token"), str):
        raise RuntimeError_(f"{home / CHALLENGE_FILE} holds no challenge")
    return {"assignment": body.get("assignment") or {}, "token": body["token"]}


def hidden_env(home: Path, service: str) -> dict[str, str]:
    """The hidden settings of one service ({} without a challenge)."""
    challenge = active_challenge(home)
    if challenge is None:
        return {}
    try:
        key = (home / KEY_FILE).read_text(encoding="ascii").strip()
    except OSError as exc:
        raise RuntimeError_(f"the sandbox's challenge has no key ({exc})") from exc
    settings = open_token(challenge["token"], key).get("settings") or {}
    return {str(k): str(v) for k, v in (settings.get(service) or {}).items()}
