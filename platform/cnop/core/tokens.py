"""JWT issue and verification, with revocation by ``jti`` in Redis.

One verifier serves the auth service (which the gateway asks) and every backend's
defence-in-depth check, so the rules (HS256 only, iss, aud, type, exp, revocation) are written once.

Without Redis the revocation list cannot be read. A read may then go on (fail open, a setting),
but a state-changing request fails closed whatever the setting: a logged-out token must never
move money. A revocation lives until the token's expiry *plus the leeway*, since the verifier
still accepts the token for that long.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from redis.asyncio import Redis

from cnop.core.metrics import TOKEN_VALIDATIONS
from cnop.core.redis import REDIS_DOWN_ERRORS, report_redis_down

ALGORITHM = "HS256"
REVOKED_PREFIX = "cnop:revoked:"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The gateway tells the auth service which method the token is presented for, so the auth service
# can apply the same fail-open/fail-closed rule as a backend. Absent means state-changing.
ORIGINAL_METHOD_HEADER = "X-CNOP-Original-Method"
TokenFailure = Literal["expired", "invalid", "revoked", "unavailable"]


class TokenError(Exception):
    def __init__(self, reason: TokenFailure, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class UserContext:
    username: str
    role: str
    jti: str
    expires_at: int


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    expires_in: int


class TokenService:
    def __init__(
        self,
        secret: str,
        *,
        issuer: str,
        audience: str,
        expiry_minutes: int,
        redis: Redis,
        service: str,
        leeway_seconds: int = 0,
        fail_open_on_redis_error: bool = True,
        check_revocation: bool = True,
        accept_unsigned: bool = False,
    ) -> None:
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.expiry_seconds = expiry_minutes * 60
        self._redis = redis
        self._service = service
        self._leeway = leeway_seconds
        self._fail_open = fail_open_on_redis_error
        self._check_revocation = check_revocation
        # The alg-none flaw (security/flaws.yaml): a token whose header says "none" is read
        # without any signature check. Never on unless a lab switches it on.
        self._accept_unsigned = accept_unsigned

    def issue(self, username: str, role: str = "user", *, now: float | None = None) -> IssuedToken:
        issued_at = int(now if now is not None else time.time())
        jti = uuid.uuid4().hex
        claims = {
            "sub": username,
            "role": role,
            "iat": issued_at,
            "exp": issued_at + self.expiry_seconds,
            "jti": jti,
            "iss": self.issuer,
            "aud": self.audience,
            "type": "access",
        }
        return IssuedToken(
            jwt.encode(claims, self._secret, algorithm=ALGORITHM), jti, self.expiry_seconds
        )

    def decode(self, token: str) -> dict[str, Any]:
        """Check signature and claims only (no Redis): raises :class:`TokenError`."""
        try:
            if self._accept_unsigned and _says_unsigned(token):
                return self._decode_unsigned(token)
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],  # never "none", never what the header asks for
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["sub", "role", "iat", "exp", "jti", "iss", "aud", "type"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("expired", "Token has expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("invalid", "Token is invalid") from exc
        if claims.get("type") != "access" or not isinstance(claims.get("sub"), str):
            raise TokenError("invalid", "Token is invalid")
        return claims

    def _decode_unsigned(self, token: str) -> dict[str, Any]:
        """The claims of an unsigned token, every other rule (exp, iss, aud, type) kept."""
        claims = jwt.decode(
            token,
            options={
                "verify_signature": False,
                "verify_exp": True,
                "verify_iss": True,
                "verify_aud": True,
                "require": ["sub", "exp", "jti", "iss", "aud", "type"],
            },
            audience=self.audience,
            issuer=self.issuer,
            leeway=self._leeway,
        )
        if claims.get("type") != "access" or not isinstance(claims.get("sub"), str):
            raise TokenError("invalid", "Token is invalid")
        claims.setdefault("role", "user")
        return claims

    async def verify(self, token: str, *, safe: bool = False) -> UserContext:
        """Full validation including revocation; counts every outcome. ``safe`` says the request
        changes nothing (GET, HEAD, OPTIONS): only then may a Redis outage fail open."""
        try:
            claims = self.decode(token)
            await self._check_not_revoked(claims["jti"], fail_open=safe and self._fail_open)
        except TokenError as exc:
            if exc.reason != "unavailable":  # an outage is not a verdict on the token
                TOKEN_VALIDATIONS.labels(exc.reason).inc()
            raise
        TOKEN_VALIDATIONS.labels("valid").inc()
        return UserContext(claims["sub"], str(claims["role"]), claims["jti"], int(claims["exp"]))

    async def _check_not_revoked(self, jti: str, *, fail_open: bool) -> None:
        if not self._check_revocation:
            return
        try:
            revoked = await self._redis.exists(REVOKED_PREFIX + jti)
        except REDIS_DOWN_ERRORS as exc:
            report_redis_down(self._service, "token_revocation", fail_open=fail_open, error=exc)
            if fail_open:
                return
            raise TokenError("unavailable", "Token cannot be checked right now") from exc
        if revoked:
            raise TokenError("revoked", "Token has been revoked")

    async def revoke(self, jti: str, expires_at: int) -> None:
        ttl = max(1, expires_at + self._leeway - int(time.time()))
        await self._redis.set(REVOKED_PREFIX + jti, "1", ex=ttl)


def _says_unsigned(token: str) -> bool:
    try:
        return str(jwt.get_unverified_header(token).get("alg", "")).lower() == "none"
    except jwt.PyJWTError:
        return False


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
