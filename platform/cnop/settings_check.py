"""``python -m cnop.settings_check SERVICE KEY=VALUE...``: is each a setting of that service,
with a value it accepts?

The lab asks this before ``lab config set`` restarts a service (a subprocess, so the harness
never imports platform code): the service's own ``Settings`` class is the one list of what it
understands. Each value is validated against its field's type and bounds as the environment
would give it (JSON for lists and objects); rules that tie several fields together are checked
when the service starts. Prints one JSON object; exit 0 when every pair is accepted, 2 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Annotated, Any, get_args, get_origin

from pydantic import AliasChoices, BaseModel, SecretStr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from cnop.run import SERVICES

_SCALARS = (str, int, float, bool, SecretStr, type(None))


def env_names(name: str, field: FieldInfo, prefix: str) -> list[str]:
    """The variables a field reads: its aliases, else prefix + name (upper case)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(a).upper() for a in alias.choices if isinstance(a, str)]
    if isinstance(alias, str):
        return [alias.upper()]
    return [f"{prefix}{name}".upper()]


def _complex(annotation: Any) -> bool:
    """Whether the environment gives this field as JSON (pydantic-settings' rule: lists,
    sets, tuples, dicts and models, also inside an optional)."""
    origin = get_origin(annotation)
    if origin in (list, set, frozenset, tuple, dict):
        return True
    if origin is not None:
        return any(_complex(arg) for arg in get_args(annotation))
    return (
        isinstance(annotation, type)
        and annotation not in _SCALARS
        and (issubclass(annotation, BaseModel))
    )


def check(service: str, pairs: dict[str, str]) -> dict[str, str]:
    """Problems per variable (empty: all accepted)."""
    settings = importlib.import_module(f"cnop.services.{service}.main").Settings
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    by_env = {
        env: (name, field)
        for name, field in settings.model_fields.items()
        for env in env_names(name, field, prefix)
    }
    problems: dict[str, str] = {}
    for key, text in pairs.items():
        if key.upper() not in by_env:
            problems[key] = f"not a setting of {service}"
            continue
        _, field = by_env[key.upper()]
        value: Any = text
        if _complex(field.annotation):
            try:
                value = json.loads(text)
            except ValueError:
                problems[key] = "expected JSON (a list or an object)"
                continue
        shape = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        adapter: TypeAdapter[Any] = TypeAdapter(shape)
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            problems[key] = "; ".join(e["msg"] for e in exc.errors())
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnop.settings_check", description=__doc__)
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    pairs = {}
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"{pair!r}: expected KEY=VALUE")
        pairs[key] = value
    problems = check(args.service, pairs)
    print(json.dumps({"service": args.service, "problems": problems}))
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
