"""From YAML text to a validated, defaulted config ready to be stored."""

from __future__ import annotations

import copy
import functools
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from stalwart_master.errors import BadRequest, FieldError, Invalid, PayloadTooLarge
from stalwart_master.expconf.common import INT64_MAX, INT64_MIN
from stalwart_master.expconf.determined import ConfigWarning, accept_determined_fields
from stalwart_master.expconf.loader import load_yaml
from stalwart_master.expconf.messages import field_errors_from
from stalwart_master.expconf.model import LOCATION_KEYS, MAX_SEED, ExperimentConfig

DEFAULT_MAX_BYTES = 1024 * 1024
INVALID_TITLE = "Invalid experiment config"

# Sections that are one of several kinds: the user's section only builds on the default of the same
# kind, so an s3 config never inherits a shared_fs host_path.
_KIND_KEYS = {"checkpoint_storage": "type", "searcher": "name"}


@dataclass(frozen=True)
class ParsedConfig:
    """A config that passed validation: the model, its stored form, the text it came from and
    the Determined fields it holds that are accepted but ignored (one warning each)."""

    config: ExperimentConfig
    data: dict[str, Any]
    original: str
    warnings: tuple[ConfigWarning, ...] = field(default=())


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None and key in merged:
            continue  # an empty YAML value means "not set" and keeps the default
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merge_defaults(defaults: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Lay ``config`` over cluster ``defaults``: mappings merge recursively and the user wins."""
    base = dict(defaults)
    for section, kind_key in _KIND_KEYS.items():
        mine, theirs = config.get(section), base.get(section)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            kind = mine.get(kind_key)
            if kind is not None and kind != theirs.get(kind_key):
                del base[section]
    mine, theirs = config.get("checkpoint_storage"), base.get("checkpoint_storage")
    if isinstance(mine, dict) and "name" in mine and isinstance(theirs, dict):
        # A named storage is a kind of its own: the default's location must not ride along, while
        # its GC policy and chunking still apply.
        base["checkpoint_storage"] = {
            k: v for k, v in theirs.items() if k not in LOCATION_KEYS and k not in ("type", "name")
        }
    return _merge(base, config)


def _fill_seed(config: dict[str, Any]) -> None:
    # Seeded here, not at trial creation, so the stored config says how to reproduce the run.
    repro = config.get("reproducibility")
    if repro is None:
        repro = config["reproducibility"] = {}
    if isinstance(repro, dict) and repro.get("experiment_seed") is None:
        repro["experiment_seed"] = secrets.randbelow(MAX_SEED + 1)


INT_OUT_OF_RANGE = f"must be an integer from {INT64_MIN} to {INT64_MAX} (quote bigger numbers)"


def _value_problem(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if INT64_MIN <= value <= INT64_MAX else INT_OUT_OF_RANGE
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    if isinstance(value, str) and "\x00" in value:
        return "must not contain NUL characters"
    return None


def _unstorable(value: Any, path: tuple[str, ...] = ()) -> list[FieldError]:
    """Values that PostgreSQL's JSONB and TEXT, or a JSON reader, cannot take back exactly.

    NaN and infinities, integers beyond 64 bits (the loader also turns literals too long to compute
    into such integers) and NUL characters, in values and in keys; a bad key is reported at its
    mapping, since the key itself cannot be shown.
    """
    here = ".".join(path)
    if isinstance(value, dict):
        found: list[FieldError] = []
        for key, item in value.items():
            problem = _value_problem(key)
            if problem is not None:
                found.append(FieldError(here, f"a key {problem}"))
            else:
                found += _unstorable(item, (*path, str(key)))
        return found
    if isinstance(value, list):
        return [e for i, item in enumerate(value) for e in _unstorable(item, (*path, str(i)))]
    problem = _value_problem(value)
    return [FieldError(here, problem)] if problem is not None else []


def _validate(config: dict[str, Any], earlier: list[FieldError] | None = None) -> ExperimentConfig:
    errors: list[FieldError] = list(earlier or [])
    model: ExperimentConfig | None = None
    try:
        model = ExperimentConfig.model_validate(config)
    except ValidationError as exc:
        errors += field_errors_from(exc)
    # Typed fields already reject most of these with their own bounds; this catches the free-form
    # ones (data, constants, vals) and whatever a typed field's rule lets through.
    reported = {e.path for e in errors}
    for error in _unstorable(config):
        path = error.path
        if not any(path == p or path.startswith(f"{p}.") for p in reported):
            errors.append(error)
    if errors or model is None:
        raise Invalid(errors, title=INVALID_TITLE)
    return model


def parse_experiment_config(
    yaml_text: str, defaults: dict[str, Any] | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> ParsedConfig:
    """Load, merge under cluster defaults, validate and fill an experiment config.

    Raises ``PayloadTooLarge``, ``BadRequest`` (unreadable or unsafe YAML, top level not a mapping)
    or ``Invalid`` listing every failing field.

    >>> parse_experiment_config(text, {"checkpoint_storage": {...}}).data["searcher"]["metric"]
    """
    size = len(yaml_text.encode())
    if size > max_bytes:
        raise PayloadTooLarge(f"the config is {size} bytes; the limit is {max_bytes}")
    loaded = load_yaml(yaml_text)
    if loaded is None:
        raise BadRequest("the config is empty", title="Invalid experiment config")
    if not isinstance(loaded, dict):
        raise BadRequest(
            f"the config must be a mapping of fields, not a {type(loaded).__name__}",
            title="Invalid experiment config",
        )
    accepted = accept_determined_fields(merge_defaults(defaults or {}, loaded))
    _fill_seed(accepted.config)
    model = _validate(accepted.config, accepted.errors)
    return ParsedConfig(
        config=model,
        data=model.model_dump(mode="json"),
        original=yaml_text,
        warnings=tuple(accepted.warnings),
    )


@functools.cache
def _schema() -> dict[str, Any]:
    schema = ExperimentConfig.model_json_schema()
    schema["title"] = "Stalwart experiment configuration"
    _relax_one_of(schema)
    return schema


def _relax_one_of(node: Any) -> None:
    # Unions picked by a Python-side function can overlap as JSON (a hyperparameter constant may look
    # like anything), so "exactly one" would reject valid configs; "any of" is the honest claim.
    if isinstance(node, dict):
        if "oneOf" in node and "discriminator" not in node:
            node["anyOf"] = node.pop("oneOf")
        for value in node.values():
            _relax_one_of(value)
    elif isinstance(node, list):
        for value in node:
            _relax_one_of(value)


def experiment_config_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``ExperimentConfig`` (a fresh copy the caller may change)."""
    return copy.deepcopy(_schema())
