"""The lab's targeted probes: the holes a fuzzer cannot see, each asked for by hand.

Schemathesis checks answers against the API description, wapiti and ZAP look for classic web
weaknesses; none of them knows that user B must not read user A's order, that a token signed
with ``alg: none`` must be refused, or that a login must answer an unknown user exactly as a wrong
password. Each probe here asks one such question the way an attacker would, from outside,
through the gateway, and reports a :class:`~grader.findings.Finding` only on a positive answer.
A probe that cannot decide (the protection it leans on is off, say) reports nothing and says
why in the run's notes, so the hardened platform yields no finding and a switched-on flaw
yields one that names it (``Finding.flaw`` is the probe's name, the flaw it is built to show).

The probes run with every engine of ``lab scan`` (engine ``probe`` in the findings), so a
schemathesis, wapiti or ZAP scan always includes them; ``--engine probe`` runs them alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from grader.findings import Finding, Risk, finding_id, level_for_risk
from scenarios.security.target import API, ScanTarget

__all__ = ["PROBES", "ProbeRun", "run_probes"]

EVIL_ORIGIN = "https://evil.example"
# What the contract promises on every response (docs/contract.md, "Security defaults").
REQUIRED_HEADERS = {
    "strict-transport-security": None,
    "x-content-type-options": "nosniff",
    "x-frame-options": None,
    "content-security-policy": None,
    "referrer-policy": None,
}
# A short list of the secrets people really use; a token signed with one is forged at will.
WEAK_SECRETS = (
    "secret", "secret123", "changeme", "change-me", "password", "jwt_secret", "jwt-secret",
    "jwtsecret", "your-secret-key", "your-256-bit-secret", "mysecret", "supersecret",
    "development", "dev", "test", "cnop", "cnop-secret", "cnop_secret", "key", "123456",
    "admin", "default", "s3cr3t", "topsecret", "qwerty", "letmein",
)  # fmt: skip
_SENSITIVE_KEY = re.compile(r"(pass(word|wd)?|hash|salt|secret|internal|failed_login|^_)", re.I)
_SENSITIVE_VALUE = re.compile(r"^\$(argon2|2[aby]\$|pbkdf2|scrypt)")
_VERBOSE = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|"
    r"\b(?:[A-Z][A-Za-z]+(?:Error|Exception)|pydantic_core|starlette|uvicorn)\b"
    r"|/site-packages/|\.py\b"
)


@dataclass
class ProbeRun:
    """What the probes found, what they sent, and why an undecided probe stayed silent."""

    target: ScanTarget
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    requests: int = 0
    bodies: list[tuple[str, str, str]] = field(default_factory=list)  # method, url, error body

    def found(
        self,
        probe: str,
        *,
        title: str,
        risk: Risk,
        cwe: int,
        owasp: str,
        method: str,
        path: str,
        evidence: str,
        fix: str,
        confidence: str = "high",
        reproduce: str = "",
    ) -> None:
        url = f"{self.target.gateway}{path}"
        self.findings.append(
            Finding(
                id=finding_id("probe", probe, method, url),
                engine="probe",
                rule=probe,
                title=title,
                risk=risk,
                confidence=confidence,  # type: ignore[arg-type]
                level=level_for_risk(risk),
                cwe=cwe,
                owasp=owasp,
                method=method,
                url=url,
                evidence=evidence[:2000],
                fix=fix,
                flaw=probe,
                reproduce=reproduce,
            )
        )

    def send(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.requests += 1
        response = client.request(method, path, **kwargs)
        if response.status_code >= 400:
            self.bodies.append((method, path, response.text[:4000]))
        return response


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _curl(method: str, url: str, headers: dict[str, str] | None = None, body: str = "") -> str:
    parts = [f"curl -i -X {method}"]
    parts += [f"-H '{k}: {v}'" for k, v in (headers or {}).items()]
    if body:
        parts.append(f"--data '{body[:200]}'")
    parts.append(f"'{url}'")
    return " ".join(parts)


# --- the probes ---------------------------------------------------------------------------


def probe_bola(run: ProbeRun) -> None:
    """API1: the second user asks for the first user's order by its id."""
    t = run.target
    path = f"{API}/orders/{t.owner.order_id}"
    with t.client("probe") as client:
        r = run.send(client, "GET", path, headers=_bearer(t.other.token))
    if r.status_code == 200 and (t.owner.order_id or "") in r.text:
        run.found(
            "bola",
            title="Another user's order is readable by its id (BOLA)",
            risk="high",
            cwe=639,
            owasp="API1:2023",
            method="GET",
            path=path,
            evidence=f"user {t.other.username} read {t.owner.username}'s order: 200 {r.text[:300]}",
            fix="Look objects up by (owner, id), never by id alone; answer 404 for another "
            "user's object, as for one that does not exist.",
            reproduce=_curl("GET", f"{t.gateway}{path}", {"Authorization": "Bearer $OTHER"}),
        )


def _alg_none_token(token: str) -> str:
    _header, payload, _signature = token.split(".")
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{payload}."


def probe_alg_none(run: ProbeRun) -> None:
    """API2: the owner's own claims, unsigned (``alg: none``)."""
    t = run.target
    path = f"{API}/auth/profile"
    forged = _alg_none_token(t.owner.token)
    with t.client("probe") as client:
        r = run.send(client, "GET", path, headers=_bearer(forged))
    if r.status_code == 200:
        run.found(
            "alg-none",
            title="An unsigned token (alg: none) is accepted",
            risk="high",
            cwe=347,
            owasp="API2:2023",
            method="GET",
            path=path,
            evidence=f"token {forged[:60]}... answered 200",
            fix="Verify every token with the one algorithm the platform signs with "
            "(jwt.decode(..., algorithms=['HS256'])); never take the algorithm from the token.",
            reproduce=_curl("GET", f"{t.gateway}{path}", {"Authorization": f"Bearer {forged}"}),
        )


def _cracked_secret(token: str) -> str | None:
    """The secret of an HS256 token, if it is one of :data:`WEAK_SECRETS` (offline guessing, as
    an attacker with one captured token does)."""
    try:
        header, payload, signature = token.split(".")
        if json.loads(_b64decode(header)).get("alg") != "HS256":
            return None
        wanted = _b64decode(signature)
    except (ValueError, TypeError):
        return None
    signing_input = f"{header}.{payload}".encode()
    for candidate in WEAK_SECRETS:
        digest = hmac.new(candidate.encode(), signing_input, hashlib.sha256).digest()
        if hmac.compare_digest(digest, wanted):
            return candidate
    return None


def probe_weak_jwt_secret(run: ProbeRun) -> None:
    """API2: the owner's token, guessed offline against a list of common secrets, then a token
    with forged claims signed with the guess."""
    t = run.target
    secret = _cracked_secret(t.owner.token)
    if secret is None:
        return
    header, payload, _ = t.owner.token.split(".")
    claims = json.loads(_b64decode(payload))
    claims.update({"role": "admin", "jti": secrets.token_hex(16)})
    body = f"{header}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    forged = f"{body}.{_b64(signature)}"
    path = f"{API}/auth/profile"
    with t.client("probe") as client:
        r = run.send(client, "GET", path, headers=_bearer(forged))
    run.found(
        "weak-jwt-secret",
        title="The token signing secret is a guessable word",
        risk="high",
        cwe=1391,
        owasp="API2:2023",
        method="GET",
        path=path,
        evidence=f"the owner's token verifies with the secret {secret!r}; a token with forged "
        f"claims (role admin) signed with it answered {r.status_code}",
        fix="Sign tokens with a long random secret (at least 32 bytes from a CSPRNG), kept out "
        "of the code; rotate it when it may have leaked.",
    )


def _sensitive(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _SENSITIVE_KEY.search(str(key)):
                yield where
            else:
                yield from _sensitive(inner, where)
    elif isinstance(value, list):
        for i, inner in enumerate(value[:20]):
            yield from _sensitive(inner, f"{path}[{i}]")
    elif isinstance(value, str) and _SENSITIVE_VALUE.search(value):
        yield path


def probe_data_exposure(run: ProbeRun) -> None:
    """API3: the owner's own profile and order, searched for password hashes and internals."""
    t = run.target
    with t.client("probe") as client:
        for path in (f"{API}/auth/profile", f"{API}/orders/{t.owner.order_id}", f"{API}/balance"):
            r = run.send(client, "GET", path, headers=_bearer(t.owner.token))
            if r.status_code != 200:
                continue
            try:
                body = r.json()
            except ValueError:
                continue
            fields = sorted(set(_sensitive(body)))
            if fields:
                run.found(
                    "data-exposure",
                    title="A response carries password hashes or internal fields",
                    risk="high",
                    cwe=213,
                    owasp="API3:2023",
                    method="GET",
                    path=path,
                    evidence=f"fields {', '.join(fields)} in {r.text[:400]}",
                    fix="Answer with a response model that lists the fields a client may see "
                    "(FastAPI response_model), never the stored record.",
                )


def probe_no_limits(run: ProbeRun) -> None:
    """API4: a page far past the documented bound, a body past 1 MiB, and whether any rate
    limit is announced on an ordinary answer."""
    t = run.target
    auth = _bearer(t.owner.token)
    with t.client("probe", timeout=30) as client:
        for path, bound in ((f"{API}/orders?limit=100000", 100),
                            (f"{API}/inventory/assets?limit=100000", 250)):  # fmt: skip
            r = run.send(client, "GET", path, headers=auth)
            if r.status_code == 200:
                run.found(
                    "no-limits",
                    title="A page size far past the documented bound is served",
                    risk="medium",
                    cwe=770,
                    owasp="API4:2023",
                    method="GET",
                    path=path,
                    evidence=f"limit=100000 (documented at most {bound}) answered 200",
                    fix="Validate page sizes against a maximum (422 past it).",
                )
        big = json.dumps({"username": "x" * (1024 * 1024 + 64), "password": "x"})
        path = f"{API}/auth/login"
        r = run.send(
            client, "POST", path, content=big, headers={"Content-Type": "application/json"}
        )
        if r.status_code != 413:
            run.found(
                "no-limits",
                title="A request body over 1 MiB is read whole",
                risk="medium",
                cwe=770,
                owasp="API4:2023",
                method="POST",
                path=path,
                evidence=f"a {len(big)} byte body answered {r.status_code}, not 413",
                fix="Refuse bodies past a size limit while reading them (413).",
            )
        path = f"{API}/balance"
        r = run.send(client, "GET", path, headers=auth)
        if r.status_code == 200 and "ratelimit-limit" not in r.headers:
            run.found(
                "no-limits",
                title="No rate limit is announced (RateLimit-* headers absent)",
                risk="low",
                cwe=770,
                owasp="API4:2023",
                method="GET",
                path=path,
                evidence="200 without RateLimit-Limit / RateLimit-Remaining",
                fix="Limit requests per client and per user, and say so in RateLimit-* headers.",
            )


def probe_verbose_errors(run: ProbeRun) -> None:
    """API8: answers to broken requests, searched for stack traces and class names; every error
    body another probe saw is searched too."""
    t = run.target
    with t.client("probe") as client:
        auth = _bearer(t.owner.token)
        broken_json = {"content": "{", "headers": {"Content-Type": "application/json"}}
        wrong_types = {"asset_id": ["x"], "quantity": {"a": 1}, "order_type": 7}
        tries: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", f"{API}/auth/login", broken_json),
            ("POST", f"{API}/orders", {"json": wrong_types, "headers": auth}),
            ("GET", f"{API}/orders/%00%2541", {"headers": auth}),
            ("GET", f"{API}/balance/asset/..%2F..%2Fetc", {"headers": auth}),
            ("POST", f"{API}/balance/deposit", {"json": {"amount": "1e999999"}, "headers": auth}),
        ]
        for method, path, kwargs in tries:
            run.send(client, method, path, **kwargs)
    for method, path, body in run.bodies:
        match = _VERBOSE.search(body)
        if match:
            run.found(
                "verbose-errors",
                title="An error answer shows internals (stack trace or class names)",
                risk="medium",
                cwe=209,
                owasp="API8:2023",
                method=method,
                path=path,
                evidence=f"{match.group(0)!r} in {body[:400]}",
                fix="Answer errors with a problem document that says what the client did wrong; "
                "log the details server-side under the request id.",
            )
            return


def probe_cors(run: ProbeRun) -> None:
    """API8: a foreign origin, with credentials, on a preflight and on a real request."""
    t = run.target
    path = f"{API}/balance"
    with t.client("probe") as client:
        pre = run.send(
            client, "OPTIONS", path,
            headers={"Origin": EVIL_ORIGIN, "Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "authorization"},
        )  # fmt: skip
        real = run.send(
            client, "GET", path, headers={"Origin": EVIL_ORIGIN, **_bearer(t.owner.token)}
        )
    for method, r in (("OPTIONS", pre), ("GET", real)):
        allowed = r.headers.get("access-control-allow-origin", "")
        if allowed in (EVIL_ORIGIN, "*"):
            creds = r.headers.get("access-control-allow-credentials", "").lower() == "true"
            run.found(
                "permissive-cors",
                title="CORS lets any origin in" + (" with credentials" if creds else ""),
                risk="high" if creds else "medium",
                cwe=942,
                owasp="API8:2023",
                method=method,
                path=path,
                evidence=f"Origin: {EVIL_ORIGIN} -> Access-Control-Allow-Origin: {allowed}"
                + (", Access-Control-Allow-Credentials: true" if creds else ""),
                fix="Allow the front end's own origins only (an allow-list), never reflect the "
                "request's Origin or answer *.",
                reproduce=_curl(method, f"{t.gateway}{path}", {"Origin": EVIL_ORIGIN}),
            )
            return


def probe_headers(run: ProbeRun) -> None:
    """API8: the security headers the contract promises, on a public and a private answer."""
    t = run.target
    with t.client("probe") as client:
        answers = [
            ("GET", f"{API}/inventory/assets", run.send(client, "GET", f"{API}/inventory/assets")),
            ("GET", f"{API}/balance",
             run.send(client, "GET", f"{API}/balance", headers=_bearer(t.owner.token))),
        ]  # fmt: skip
    for method, path, r in answers:
        missing = [
            name
            for name, value in REQUIRED_HEADERS.items()
            if name not in r.headers or (value and r.headers[name].lower() != value)
        ]
        if path.endswith("/balance") and "no-store" not in r.headers.get("cache-control", ""):
            missing.append("cache-control: no-store")
        if missing:
            run.found(
                "missing-headers",
                title="Security headers are missing",
                risk="low",
                cwe=693,
                owasp="API8:2023",
                method=method,
                path=path,
                evidence=f"{r.status_code} without {', '.join(missing)}",
                fix="Send Strict-Transport-Security, X-Content-Type-Options: nosniff, "
                "X-Frame-Options: DENY, Content-Security-Policy, Referrer-Policy and, on API "
                "answers, Cache-Control: no-store on every response.",
            )


def _problem_shape(r: httpx.Response) -> tuple[int, str]:
    try:
        body = r.json()
    except ValueError:
        return r.status_code, r.text[:80]
    return r.status_code, str(body.get("title", "")) + "|" + str(body.get("detail", ""))


def probe_user_enumeration(run: ProbeRun) -> None:
    """API2: a wrong password for a real user against any password for a user that does not
    exist; the answers must not tell them apart."""
    t = run.target
    path = f"{API}/auth/login"
    ghost = f"ghost_{t.nonce}_{secrets.token_hex(2)}"
    with t.client("enumeration") as client:
        real = run.send(
            client, "POST", path, json={"username": t.owner.username, "password": "Wrong!Passw0rd1"}
        )
        unknown = run.send(client, "POST", path,
                           json={"username": ghost, "password": "Wrong!Passw0rd1"})  # fmt: skip
    if real.status_code in (403, 429) or unknown.status_code in (403, 429):
        run.notes.append("user-enumeration: undecided, the login guard answered first")
        return
    a, b = _problem_shape(real), _problem_shape(unknown)
    if a != b:
        run.found(
            "user-enumeration",
            title="Login tells an unknown user from a wrong password",
            risk="medium",
            cwe=204,
            owasp="API2:2023",
            method="POST",
            path=path,
            evidence=f"wrong password for a real user: {a[0]} {a[1]!r}; unknown user: "
            f"{b[0]} {b[1]!r}",
            fix="Answer both with the same status and body (401 'invalid credentials'), and "
            "spend the same time on both (hash a dummy password for an unknown user).",
        )


def probe_trust_any_xff(run: ProbeRun) -> None:
    """API8: five failed logins get this address blocked; does a sixth that claims another
    address in X-Forwarded-For walk past the block?"""
    t = run.target
    path = f"{API}/auth/login"
    # A real user's name with a wrong password: a credential failure whatever else is switched
    # off (an unknown name may be answered 404 and not counted); the second user, so the
    # owner's logins are never throttled.
    attempt = {"username": t.other.username, "password": "Wrong!Passw0rd1"}
    with t.client("xff") as client:
        statuses = [run.send(client, "POST", path, json=attempt).status_code for _ in range(6)]
        if statuses[-1] != 403:
            run.notes.append(
                f"trust-any-xff: undecided, six failed logins were not blocked ({statuses})"
            )
            return
        spoofed = f"198.51.100.{secrets.randbelow(250) + 2}"
        r = run.send(client, "POST", path, json=attempt, headers={"X-Forwarded-For": spoofed})
    if r.status_code != 403:
        run.found(
            "trust-any-xff",
            title="X-Forwarded-For from any client is believed",
            risk="medium",
            cwe=348,
            owasp="API8:2023",
            method="POST",
            path=path,
            evidence=f"blocked after failed logins ({statuses[-1]}), then X-Forwarded-For: "
            f"{spoofed} answered {r.status_code}",
            fix="Key limits and blocks on the socket peer; believe X-Forwarded-For only from "
            "configured proxies (CNOP_TRUSTED_PROXIES), and only the address they wrote.",
            reproduce=_curl("POST", f"{t.gateway}{path}", {"X-Forwarded-For": spoofed}),
        )


# Name -> probe; verbose-errors runs last, so it also reads every error the others saw.
PROBES: dict[str, Callable[[ProbeRun], None]] = {
    "bola": probe_bola,
    "alg-none": probe_alg_none,
    "weak-jwt-secret": probe_weak_jwt_secret,
    "data-exposure": probe_data_exposure,
    "no-limits": probe_no_limits,
    "permissive-cors": probe_cors,
    "missing-headers": probe_headers,
    "user-enumeration": probe_user_enumeration,
    "trust-any-xff": probe_trust_any_xff,
    "verbose-errors": probe_verbose_errors,
}


def run_probes(target: ScanTarget, only: list[str] | None = None) -> ProbeRun:
    """Every probe (or ``only`` these) against ``target``; a probe that fails to get an answer
    is a note, never a finding."""
    run = ProbeRun(target)
    for name, probe in PROBES.items():
        if only is not None and name not in only:
            continue
        try:
            probe(run)
        except httpx.HTTPError as exc:
            run.notes.append(f"{name}: no answer ({type(exc).__name__}: {exc})")
    return run
