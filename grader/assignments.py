"""Assignments: what an instructor asks a class to run, and the key that makes their runs
tamper-evident.

``lab assignment new`` writes two files:

- the **assignment** (``NAME.assignment.json``, for students): name, scenarios with the sha256
  of each scenario file and its parameters, settings the runs must use, due date, hint cost, a
  key id and a *signing key*;
- the **key** (``NAME.key.json``, mode 0600, for the instructor only): the secret the signing
  key is derived from.

The signing key is ``HMAC-SHA256(secret, canonical assignment without its signing key)``. A run
made for the assignment seals its evidence with it, and ``lab submit`` signs the bundle with it.
The grader derives it again from the secret and *its own* copy of the assignment, so a student
who edits their copy (a later due date, other settings) signs with a key that no longer verifies.
The student holds the signing key, so this is tamper-evident, not tamper-proof:
docs/instructors.md says why.

A **challenge** assignment also carries settings the platform starts with but the student is
not shown (``challenge``: a Fernet token under a key derived from the signing key, so the
student's lab can open it and so can the grader, from the secret). Hidden, not secret: the same
key that signs opens it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ASSIGNMENT_FORMAT",
    "KEY_FORMAT",
    "STUDENT_PATTERN",
    "Assignment",
    "AssignmentError",
    "AssignmentKey",
    "AssignmentScenario",
    "canonical_json",
    "challenge_key",
    "check_student",
    "load_assignment",
    "load_key",
    "new_assignment",
    "open_challenge",
    "signing_key",
    "write_assignment",
]

ASSIGNMENT_FORMAT = "cnop-lab-assignment/1"
KEY_FORMAT = "cnop-lab-assignment-key/1"
STUDENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_DERIVE_LABEL = b"cnop-lab assignment signing key v1\n"
_CHALLENGE_LABEL = b"cnop-lab assignment challenge key v1\n"


class AssignmentError(Exception):
    """An assignment or key file is missing, unreadable or does not belong with the other."""


class AssignmentScenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str  # of the scenario file the instructor assigned
    parameters: dict[str, Any] = {}


class Assignment(BaseModel):
    """The students' copy. ``signing_key`` is what sealing and signing need (hex)."""

    model_config = ConfigDict(extra="forbid")

    format: str = ASSIGNMENT_FORMAT
    name: str = Field(pattern=_NAME_PATTERN)
    created_at: datetime
    due: datetime | None = None
    hint_cost: int = Field(default=0, ge=0)
    scenarios: list[AssignmentScenario] = Field(min_length=1)
    # CNOP_* settings every run must use: service -> settings ("weakened" drills).
    settings: dict[str, dict[str, str]] = {}
    student: str | None = Field(default=None, pattern=STUDENT_PATTERN)  # a per-student copy
    key_id: str
    signing_key: str = ""
    # A challenge: settings (and flaws) the platform starts with, hidden from the student (a
    # Fernet token under a key derived from the signing key; see open_challenge).
    challenge: str | None = None

    def scenario(self, name: str) -> AssignmentScenario | None:
        return next((s for s in self.scenarios if s.name == name), None)

    @property
    def ref(self) -> dict[str, str]:
        return {"name": self.name, "key_id": self.key_id}


class AssignmentKey(BaseModel):
    """The instructor's secret; never handed out."""

    model_config = ConfigDict(extra="forbid")

    format: str = KEY_FORMAT
    name: str
    key_id: str
    secret: str


def canonical_json(data: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8 (what HMACs are taken over)."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    ).encode("utf-8")


def _derive(assignment: Assignment, secret: str) -> str:
    # The challenge is sealed with the derived key, so it cannot be part of what derives it;
    # the grader compares each run's challenge with its own copy instead.
    body = assignment.model_dump(mode="json", exclude={"signing_key", "challenge"})
    return hmac.new(
        bytes.fromhex(secret), _DERIVE_LABEL + canonical_json(body), hashlib.sha256
    ).hexdigest()


def new_assignment(
    name: str,
    scenarios: list[AssignmentScenario],
    *,
    due: datetime | None = None,
    hint_cost: int = 0,
    settings: dict[str, dict[str, str]] | None = None,
    challenge: dict[str, Any] | None = None,
) -> tuple[Assignment, AssignmentKey]:
    """A fresh assignment and its key (a new 256-bit secret). ``challenge`` (``{"settings":
    {service: {KEY: VALUE}}}``) is sealed into the assignment, for ``lab up --assignment``."""
    if due is not None and due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    try:
        assignment = Assignment(
            name=name,
            created_at=datetime.now(UTC).replace(microsecond=0),
            due=due,
            hint_cost=hint_cost,
            scenarios=scenarios,
            settings=settings or {},
            key_id=secrets.token_hex(8),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise AssignmentError(f"assignment {where}: {first['msg']}") from None
    key = AssignmentKey(name=name, key_id=assignment.key_id, secret=secrets.token_hex(32))
    assignment.signing_key = _derive(assignment, key.secret)
    if challenge:
        assignment.challenge = (
            Fernet(challenge_key(assignment)).encrypt(canonical_json(challenge)).decode("ascii")
        )
    return assignment, key


def challenge_key(assignment: Assignment) -> str:
    """The Fernet key of an assignment's challenge: derived from its signing key, so whoever
    can sign runs for it can start it, and the grader (who derives the signing key from the
    secret) can open it too."""
    mac = hmac.new(bytes.fromhex(assignment.signing_key), _CHALLENGE_LABEL, hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode("ascii")


def open_challenge(assignment: Assignment) -> dict[str, Any]:
    """The challenge's content (``{"settings": ...}``); {} for an assignment without one."""
    if not assignment.challenge:
        return {}
    try:
        token = assignment.challenge.encode("ascii")
        payload = json.loads(Fernet(challenge_key(assignment)).decrypt(token))
    except (InvalidToken, ValueError) as exc:
        raise AssignmentError(
            f"assignment {assignment.name}: its challenge does not open "
            "(the file was edited, or its signing key is not the one it was made with)"
        ) from exc
    return payload if isinstance(payload, dict) else {}


def signing_key(assignment: Assignment, key: AssignmentKey) -> bytes:
    """The key bundles of ``assignment`` are signed with, derived from the instructor's secret;
    raises when the key is another assignment's or the assignment file was edited."""
    if key.key_id != assignment.key_id:
        raise AssignmentError(
            f"the key {key.key_id} belongs to another assignment (this one has {assignment.key_id})"
        )
    derived = _derive(assignment, key.secret)
    if assignment.signing_key and not hmac.compare_digest(derived, assignment.signing_key):
        raise AssignmentError(
            "the assignment file was changed after it was created (its signing key no longer "
            "derives from the key); use the instructor's original copy"
        )
    return bytes.fromhex(derived)


def write_assignment(
    assignment: Assignment, key: AssignmentKey, out_dir: Path
) -> tuple[Path, Path]:
    """``NAME.assignment.json`` (for students) and ``NAME.key.json`` (mode 0600, instructor)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    public = out_dir / f"{assignment.name}.assignment.json"
    private = out_dir / f"{assignment.name}.key.json"
    if private.exists():
        raise AssignmentError(f"{private} exists; remove it or choose another --out")
    public.write_text(assignment.model_dump_json(indent=2) + "\n", encoding="utf-8")
    # Created 0600 from the start: the secret is never readable by others, not even briefly.
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key.model_dump_json(indent=2) + "\n")
    return public, private


def _read(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssignmentError(f"{path}: no such {what} file") from None
    except (OSError, ValueError) as exc:
        raise AssignmentError(f"{path}: not a readable {what} file ({exc})") from None


def _first_error(path: Path, exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "file"
    return f"{path}: {where}: {first['msg']}"


def load_assignment(path: Path) -> Assignment:
    data = _read(path, "assignment")
    if isinstance(data, dict) and data.get("format") == KEY_FORMAT:
        raise AssignmentError(f"{path} is the instructor's key, not the assignment")
    try:
        return Assignment.model_validate(data)
    except ValidationError as exc:
        raise AssignmentError(_first_error(path, exc)) from None


def load_key(path: Path) -> AssignmentKey:
    data = _read(path, "key")
    try:
        key = AssignmentKey.model_validate(data)
        bytes.fromhex(key.secret)
    except ValidationError as exc:
        raise AssignmentError(_first_error(path, exc)) from None
    except ValueError:
        raise AssignmentError(f"{path}: the secret is not hex") from None
    return key


def check_student(student: str) -> str:
    if not re.match(STUDENT_PATTERN, student):
        raise AssignmentError(
            f"student id {student!r} must be 1-64 letters, digits and . _ @ + - "
            "(it names files in the gradebook)"
        )
    return student
