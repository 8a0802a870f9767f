"""The one translator from pydantic's multi-line validation reports to one line a user can act
on: '<field>: <problem> (got <value>); <fix>'. Config, data options and results records all
speak through it, so every refusal reads the same."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

DEFAULT_FIX = "see the README for the allowed values"


def short(value: Any) -> str:
    """A value as it appears in a message: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def field_path(err: ValidationError) -> str:
    """The dotted location of the first problem (e.g. 'metrics.test.ppl'); '' for the top."""
    return ".".join(str(p) for p in err.errors()[0]["loc"])


def one_line(err: ValidationError, allowed: Iterable[str] = (), fixes: Mapping[str, str] | None = None,
             names: Mapping[str, str] | None = None) -> str:
    """The first problem of a pydantic report as 'field: problem (got x); fix'.

    `fixes` maps a field's last name to the fix shown after it; `names` renames fields (e.g.
    'corpus' -> '--data', where the user set it on the command line)."""
    first = err.errors()[0]
    parts = [str(p) for p in first["loc"]]
    if names and parts and parts[0] in names:
        parts[0] = names[parts[0]]
    field = ".".join(parts) or "value"
    fix = (fixes or {}).get(parts[-1] if parts else "", DEFAULT_FIX)
    if first["type"] == "extra_forbidden":
        return f"unknown key '{field}'; allowed keys: {', '.join(allowed)}"
    if first["type"] == "missing":
        return f"{field}: missing; add a `{field}:` line and {fix}"
    problem = re.sub(r"^(Input|String|Value) should", "must", first["msg"])
    return f"{field}: {problem} (got {short(first['input'])}); {fix}"
