"""Seals on runs and signed submission bundles: how a run travels from a student to the grader.

Two HMAC-SHA256 layers, both with the assignment's signing key (:mod:`grader.assignments`):

1. **The seal** (``result.json``'s ``seal``), made when the run ends, covers what grading reads:
   the scenario, seed, parameters, phases, provenance and every check's raw evidence. It does
   not cover verdicts, points or reports: the grader recomputes those, so editing them changes
   nothing, while editing evidence afterwards breaks the seal.
2. **The bundle signature** (``lab submit``): a zip holding each run's result.json, a logs
   excerpt (the log events its log checks counted) and ``manifest.json`` listing every
   member's sha256; ``signature.json`` is the HMAC of the manifest's exact bytes. A member
   added, removed or changed after packing no longer matches.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grader.assignments import Assignment, canonical_json
from grader.model import RunResult

__all__ = [
    "BUNDLE_FORMAT",
    "BundleError",
    "SubmittedRun",
    "VerifiedBundle",
    "make_bundle",
    "seal_result",
    "seal_valid",
    "verify_bundle",
]

BUNDLE_FORMAT = "cnop-lab-submission/1"
ALGORITHM = "HMAC-SHA256"
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
MAX_MEMBER_BYTES = 64 * 1024 * 1024  # a bundle is read into memory; refuse a zip bomb
_SEALED_FIELDS = ("scenario", "seed", "params", "phases", "mode", "started_at", "finished_at")


class BundleError(Exception):
    """A bundle cannot be made (the runs do not fit together); one line for the CLI."""


def _sealed_bytes(data: dict[str, Any]) -> bytes:
    body = {name: data.get(name) for name in _SEALED_FIELDS}
    # A phase is sealed as its name and times: fields added to a phase later (its `about`
    # text, schema 1.2) must not break the seal of a run made before them when `lab report`
    # writes its result.json again.
    phases = body.get("phases")
    if isinstance(phases, list):
        body["phases"] = [
            {k: p.get(k) for k in ("name", "start", "end")} if isinstance(p, dict) else p
            for p in phases
        ]
    body["provenance"] = data.get("provenance")
    body["checks"] = [
        {"id": c.get("id"), "raw": c.get("raw")} for c in data.get("checks") or [] if c
    ]
    return b"cnop-lab run seal v1\n" + canonical_json(body)


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def seal_result(result: RunResult, key: bytes, key_id: str) -> RunResult:
    """``result`` with a seal over what grading reads. Taken over the JSON form of the result,
    exactly as result.json will hold it, so reading the file back reproduces the bytes."""
    data = json.loads(result.model_dump_json())
    seal = {"alg": ALGORITHM, "key_id": key_id, "mac": _mac(key, _sealed_bytes(data))}
    return result.model_copy(update={"seal": seal})


def seal_valid(data: dict[str, Any], key: bytes) -> bool:
    seal = data.get("seal")
    if not isinstance(seal, dict) or not isinstance(seal.get("mac"), str):
        return False
    return hmac.compare_digest(_mac(key, _sealed_bytes(data)), seal["mac"])


def _logs_excerpt(data: dict[str, Any]) -> str:
    lines = []
    for check in data.get("checks") or []:
        raw = check.get("raw") if isinstance(check, dict) else None
        reads = raw.get("logs") if isinstance(raw, dict) else None
        for read in reads if isinstance(reads, list) else []:
            events = read.get("events") if isinstance(read, dict) else None
            for event in events if isinstance(events, list) else []:
                if not isinstance(event, dict):
                    continue
                lines.append(
                    json.dumps(
                        {"check": check.get("id"), "service": read.get("service"), **event},
                        ensure_ascii=False,
                    )
                )
    return "\n".join(lines) + ("\n" if lines else "")


def make_bundle(
    run_dirs: list[Path], assignment: Assignment, out: Path, key: bytes
) -> tuple[Path, str]:
    """Pack the runs of one student into a signed zip; returns (path, student)."""
    members: dict[str, bytes] = {}
    runs = []
    students: set[str] = set()
    for index, run_dir in enumerate(run_dirs, 1):
        path = run_dir / "result.json" if run_dir.is_dir() else run_dir
        try:
            raw = path.read_bytes()
            data = json.loads(raw)
        except FileNotFoundError:
            raise BundleError(f"{run_dir} holds no result.json") from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path} is not a run result ({exc})") from None
        provenance = data.get("provenance") or {}
        made_for = provenance.get("assignment") or {}
        if made_for.get("key_id") != assignment.key_id:
            raise BundleError(
                f"{run_dir} was not run for assignment {assignment.name} "
                "(run it with `lab run NAME --assignment FILE --student ID`)"
            )
        if provenance.get("student"):
            students.add(str(provenance["student"]))
        folder = f"runs/{index:02d}-{data.get('scenario', 'run')}"
        members[f"{folder}/result.json"] = raw
        members[f"{folder}/logs-excerpt.jsonl"] = _logs_excerpt(data).encode("utf-8")
        runs.append({"scenario": data.get("scenario"), "result": f"{folder}/result.json"})
    if not runs:
        raise BundleError("no run to submit")
    if len(students) != 1:
        names = ", ".join(sorted(students)) or "none"
        raise BundleError(f"one bundle holds one student's runs (found: {names})")
    student = students.pop()
    manifest = {
        "format": BUNDLE_FORMAT,
        "assignment": assignment.ref,
        "student": student,
        "created_at": datetime.now(UTC).isoformat(),
        "runs": runs,
        "members": {name: hashlib.sha256(body).hexdigest() for name, body in members.items()},
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode("utf-8")
    signature = {"alg": ALGORITHM, "key_id": assignment.key_id, "mac": _mac(key, manifest_bytes)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, manifest_bytes)
        for name, body in members.items():
            archive.writestr(name, body)
        archive.writestr(SIGNATURE, json.dumps(signature, indent=2))
    return out, student


@dataclass
class SubmittedRun:
    member: str
    data: dict[str, Any]
    problems: list[str] = field(default_factory=list)  # this run cannot be trusted because...


@dataclass
class VerifiedBundle:
    path: Path
    student: str | None = None
    created_at: str | None = None
    runs: list[SubmittedRun] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the bundle as a whole is unverifiable

    @property
    def verified(self) -> bool:
        return not self.problems and all(not r.problems for r in self.runs)


def _read_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        out = {}
        for info in archive.infolist():
            if info.is_dir():
                continue
            if info.file_size > MAX_MEMBER_BYTES:
                raise BundleError(f"member {info.filename} is larger than 64 MiB")
            out[info.filename] = archive.read(info)
        return out


def verify_bundle(path: Path, assignment: Assignment, key: bytes) -> VerifiedBundle:
    """Check signature, manifest and every run's seal; never raises for a bad bundle (its
    problems are listed instead, so the gradebook can show it)."""
    found = VerifiedBundle(path=path)
    try:
        members = _read_members(path)
    except (zipfile.BadZipFile, OSError, BundleError) as exc:
        found.problems.append(f"not a readable bundle ({exc})")
        return found
    manifest_bytes = members.get(MANIFEST)
    try:
        manifest = json.loads(manifest_bytes or b"")
        signature = json.loads(members.get(SIGNATURE) or b"")
    except ValueError:
        found.problems.append("manifest.json or signature.json is missing or not JSON")
        return found
    if not isinstance(manifest, dict) or not isinstance(signature, dict):
        found.problems.append("manifest.json or signature.json is not an object")
        return found
    found.student = str(manifest.get("student") or "") or None
    found.created_at = manifest.get("created_at")
    if signature.get("key_id") != assignment.key_id:
        found.problems.append(
            f"signed for another assignment (key {signature.get('key_id')}, "
            f"expected {assignment.key_id})"
        )
        return found
    mac = signature.get("mac")
    if not isinstance(mac, str) or not hmac.compare_digest(_mac(key, manifest_bytes or b""), mac):
        found.problems.append("the signature does not match the manifest (edited after signing)")
        return found
    listed = manifest.get("members") or {}
    for name, digest in sorted(listed.items()):
        body = members.get(name)
        if body is None:
            found.problems.append(f"{name} is listed in the manifest but missing")
        elif hashlib.sha256(body).hexdigest() != digest:
            found.problems.append(f"{name} does not match its sha256 in the manifest")
    extra = sorted(set(members) - set(listed) - {MANIFEST, SIGNATURE})
    if extra:
        found.problems.append(f"members not in the manifest: {', '.join(extra)}")
    if found.problems:
        return found
    for entry in manifest.get("runs") or []:
        member = str(entry.get("result", ""))
        try:
            data = json.loads(members[member])
        except (KeyError, ValueError):
            found.problems.append(f"{member} is not a run result")
            continue
        run = SubmittedRun(member=member, data=data)
        _check_run(run, found.student, assignment, key)
        found.runs.append(run)
    if not found.runs:
        found.problems.append("the bundle holds no run")
    return found


def _check_run(run: SubmittedRun, student: str | None, assignment: Assignment, key: bytes) -> None:
    data = run.data
    provenance = data.get("provenance") or {}
    if not isinstance(data.get("seal"), dict):
        run.problems.append("the run carries no seal (it was not made with --assignment)")
    elif data["seal"].get("key_id") != assignment.key_id:
        run.problems.append("the run was sealed for another assignment")
    elif not seal_valid(data, key):
        run.problems.append(
            "the run's evidence or provenance was edited after the run (its seal is broken)"
        )
    if provenance.get("student") != student:
        run.problems.append(
            f"the run belongs to {provenance.get('student')!r}, the bundle to {student!r}"
        )


def read_bundle_bytes(body: bytes) -> dict[str, bytes]:
    """Members of a bundle given as bytes (tests and tools)."""
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}
