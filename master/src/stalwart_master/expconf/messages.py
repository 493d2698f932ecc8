"""Turn pydantic's errors into ``FieldError``s: dotted paths into the YAML and short messages.

Pydantic's locations also contain the tags of the unions it tried (``searcher.random.max_trials``);
a user never wrote those, so they are removed by position: the model knows exactly where each
union sits, which is safer than removing any segment that merely looks like a tag (a hyperparameter
may well be called ``random``).
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from stalwart_master.errors import FieldError
from stalwart_master.expconf.common import ERROR_TYPE, Section

_QUOTED = re.compile(r"'([^']*)'")

_SIMPLE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "string_too_short": "must not be empty",
}

_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be greater than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
    "string_too_long": ("max_length", "must be at most {} characters"),
    "too_long": ("max_length", "must have at most {} items"),
}


def _clean_union_position(loc: list[Any], at: int) -> tuple[list[Any], str | None]:
    """Drop the union tag at index ``at``; return the new location and the dropped tag."""
    if len(loc) <= at:
        return loc, None
    return loc[:at] + loc[at + 1 :], str(loc[at])


def _clean_hyperparameters(loc: list[Any]) -> tuple[list[Any], str | None]:
    # Shape: hyperparameters, key, kind, [key, kind, ...], and after "spec" the type tag, then fields.
    out: list[Any] = [loc[0]]
    index = 1
    spec_type: str | None = None
    while index < len(loc):
        out.append(loc[index])
        index += 1
        if index >= len(loc):
            break
        kind = loc[index]
        index += 1
        if kind == "group":
            continue
        if kind == "spec" and index < len(loc):
            spec_type = str(loc[index])
            index += 1
        out.extend(loc[index:])
        break
    return out, spec_type


def _clean_environment(loc: list[Any]) -> list[Any]:
    if len(loc) < 3 or loc[1] not in ("image", "environment_variables"):
        return loc
    out, tag = _clean_union_position(loc, 2)
    if tag == "per_device":  # ... environment_variables, cpu|cuda, list|map, ...
        out, _ = _clean_union_position(out, 3)
    return out


def clean_location(loc: tuple[str | int, ...]) -> tuple[list[str | int], str | None]:
    """The user's path for a pydantic location, and a phrase naming the union member, if any."""
    path: list[Any] = list(loc)
    if not path:
        return path, None
    head = path[0]
    if head == "searcher":
        path, tag = _clean_union_position(path, 1)
        return path, tag
    if head == "checkpoint_storage":
        path, tag = _clean_union_position(path, 1)
        return path, f"{tag} storage" if tag else None
    if head == "hyperparameters":
        path, tag = _clean_hyperparameters(path)
        return path, f"{tag} hyperparameters" if tag else None
    if head == "entrypoint":
        path, _ = _clean_union_position(path, 1)
    elif head == "environment":
        path = _clean_environment(path)
    return path, None


@functools.cache
def _known_names() -> tuple[str, ...]:
    """Every field name of every config section (ours and the Determined ones we ignore)."""
    from stalwart_master.expconf.determined import ignored_names  # imports this module

    names: set[str] = set(ignored_names())
    pending: list[type[Section]] = [Section]
    while pending:
        model = pending.pop()
        names.update(model.model_fields)
        pending.extend(model.__subclasses__())
    return tuple(sorted(names))


def _did_you_mean(key: Any) -> str:
    # A typo is the usual reason for an unknown field; the closest known name is a cheap hint.
    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, _known_names(), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _quoted_list(text: str) -> str:
    return ", ".join(_QUOTED.findall(text)) or text


def _message(err: ErrorDetails, member: str | None) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    suffix = f" for {member}" if member else ""
    if kind == ERROR_TYPE:
        return str(ctx.get("message", err["msg"]))
    if kind in ("missing", "union_tag_not_found"):
        return "required" + suffix
    if kind == "extra_forbidden":
        return "unknown field" + suffix + (_did_you_mean(err["loc"][-1]) if err["loc"] else "")
    if kind == "union_tag_invalid":
        return "must be one of " + _quoted_list(str(ctx.get("expected_tags", "")))
    if kind == "literal_error":
        return "must be one of " + _quoted_list(str(ctx.get("expected", "")))
    if kind == "too_short":
        minimum = ctx.get("min_length", 1)
        return "must not be empty" if minimum == 1 else f"must have at least {minimum} items"
    if kind in _BOUNDS:
        key, template = _BOUNDS[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return template.format(bound)
    if kind in _SIMPLE_MESSAGES:
        return _SIMPLE_MESSAGES[kind]
    msg = err["msg"]
    return msg[:1].lower() + msg[1:]


def field_errors_from(exc: ValidationError) -> list[FieldError]:
    """Every error in ``exc`` as a ``FieldError``, in order, without duplicates."""
    result: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        is_key = bool(loc) and loc[-1] == "[key]"
        path, member = clean_location(loc[:-1] if is_key else loc)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            discriminator = _QUOTED.findall(str((err.get("ctx") or {}).get("discriminator", "")))
            path += discriminator
        message = _message(err, member)
        if is_key and err["type"] == "string_type":
            message = "keys must be strings"
        key = (".".join(str(part) for part in path), message)
        if key not in seen:
            seen.add(key)
            result.append(FieldError(*key))
    return result
