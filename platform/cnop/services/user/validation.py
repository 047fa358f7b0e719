"""The contract's input rules as plain functions, so they are testable without HTTP.

Each check returns the normalised value or raises ``ValueError`` with a message that states the
rule (pydantic turns it into a 422 naming the field). Messages never echo the input: a password
typed into the wrong field must not come back in an error body or a log.
"""

from __future__ import annotations

import re
from datetime import date

from cnop.core.clock import utc_now

USERNAME_RE = re.compile(r"[A-Za-z0-9_]{6,30}")
ASSET_ID_RE = re.compile(r"[A-Za-z0-9]{1,10}")
PHONE_RE = re.compile(r"[0-9]{10,15}")
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
PASSWORD_SPECIALS = "!@#$%^&*()-_=+"  # noqa: S105 (a character class, not a secret)
PASSWORD_MIN, PASSWORD_MAX = 12, 20
NAME_MAX = 50
NAME_PUNCTUATION = " '-"
AGE_MIN, AGE_MAX = 13, 120


def check_username(value: str) -> str:
    """Usernames are stored lower-case, which is what makes login case-insensitive."""
    if not USERNAME_RE.fullmatch(value):
        raise ValueError("username must be 6-30 letters, digits or underscores")
    return value.lower()


def check_password(value: str) -> str:
    problems = []
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        problems.append(f"be {PASSWORD_MIN}-{PASSWORD_MAX} characters long")
    if not re.search(r"[A-Z]", value):
        problems.append("contain an upper-case letter")
    if not re.search(r"[a-z]", value):
        problems.append("contain a lower-case letter")
    if not re.search(r"[0-9]", value):
        problems.append("contain a digit")
    if not any(c in PASSWORD_SPECIALS for c in value):
        problems.append(f"contain one of {PASSWORD_SPECIALS}")
    if problems:
        raise ValueError("password must " + ", ".join(problems))
    return value


def check_name(value: str) -> str:
    """Letters of any script, plus space, apostrophe and hyphen; at least one letter."""
    ok = (
        1 <= len(value) <= NAME_MAX
        and all(c.isalpha() or c in NAME_PUNCTUATION for c in value)
        and any(c.isalpha() for c in value)
    )
    if not ok:
        raise ValueError(f"name must be 1-{NAME_MAX} letters, spaces, apostrophes or hyphens")
    return value


def check_phone(value: str) -> str:
    if not PHONE_RE.fullmatch(value):
        raise ValueError("phone must be 10-15 digits")
    return value


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def check_date_of_birth(value: str, today: date | None = None) -> str:
    if not DATE_RE.fullmatch(value):
        raise ValueError("date_of_birth must be a date in YYYY-MM-DD form")
    try:
        born = date.fromisoformat(value)
    except ValueError:
        raise ValueError("date_of_birth must be a date in YYYY-MM-DD form") from None
    age = age_on(born, today or utc_now().date())
    if not AGE_MIN <= age <= AGE_MAX:
        raise ValueError(f"age must be between {AGE_MIN} and {AGE_MAX} years")
    return value


def check_email(value: str) -> str:
    """Addresses are compared case-insensitively, so they are stored lower-case."""
    return value.lower()


def check_asset_id(value: str) -> str:
    if not ASSET_ID_RE.fullmatch(value):
        raise ValueError("asset_id must be 1-10 letters or digits")
    return value.upper()
