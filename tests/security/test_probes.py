"""The probes' offline parts: guessing an HS256 secret from one token, spotting password
hashes and internal fields in an answer, and telling verbose errors from plain ones."""

from __future__ import annotations

import jwt

from scenarios.security.probes import _VERBOSE, _cracked_secret, _sensitive


def test_a_token_signed_with_a_listed_word_gives_the_word_away() -> None:
    token = jwt.encode({"sub": "alice"}, "secret", algorithm="HS256")
    assert _cracked_secret(token) == "secret"


def test_a_token_signed_with_a_random_secret_gives_nothing_away() -> None:
    token = jwt.encode({"sub": "alice"}, "x" * 32 + "Q7!r", algorithm="HS256")
    assert _cracked_secret(token) is None
    assert _cracked_secret("not-a-jwt") is None


def test_password_hashes_and_internal_fields_are_spotted_wherever_they_hide() -> None:
    body = {
        "username": "alice",
        "email": "a@example.com",
        "data": [{"order_id": "o1", "_pk": "USER#alice"}],
        "profile": {"password_hash": "x", "note": "$argon2id$v=19$m=19456,t=2,p=1$abc"},
    }
    assert sorted(_sensitive(body)) == ["data[0]._pk", "profile.note", "profile.password_hash"]
    assert not list(_sensitive({"username": "alice", "created_at": "2026-11-27", "role": "user"}))


def test_a_plain_problem_document_is_not_verbose_but_a_traceback_is() -> None:
    plain = (
        '{"type":"https://cnop-lab.dev/problems/validation-error","title":"Unprocessable '
        'Content","status":422,"detail":"Invalid input","errors":[{"field":"body.username",'
        '"message":"Field required"}]}'
    )
    assert _VERBOSE.search(plain) is None
    assert _VERBOSE.search('{"exception":"RequestValidationError"}')
    assert _VERBOSE.search('{"traceback":"Traceback (most recent call last):\\n  File \\"a.py\\""}')
