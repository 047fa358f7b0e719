"""The body of ``POST /api/v1/auth/register``, in one place: drills, probes, the walkthrough,
the bench and the tests all create accounts the way a user would, through the public API."""

from __future__ import annotations


def registration_body(
    username: str,
    password: str,
    *,
    first_name: str = "Lab",
    last_name: str = "Trader",
    email_domain: str = "example.com",
) -> dict[str, str]:
    return {
        "username": username,
        "email": f"{username}@{email_domain}",
        "password": password,
        "first_name": first_name,
        "last_name": last_name,
    }
