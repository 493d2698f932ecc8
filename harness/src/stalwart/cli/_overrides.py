"""``--config KEY=VALUE``: Determined's way of changing one config field on the command line.

``KEY`` is a dotted path into the config (``hyperparameters.lr``, ``resources.slots_per_trial``);
missing mappings on the way are created. ``VALUE`` is read as YAML, so ``3`` is a number,
``true`` a boolean and ``[1, 2]`` a list. Repeat the option for several fields; later ones win.
The result goes to the master like any config, which checks it field by field.

Example::

    text = apply_overrides("searcher: {name: single}\\n", ["searcher.max_length.batches=100"])
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from stalwart.cli._errors import CliError

# A config key as Determined's (and our) configs spell them; a key with a dot is not reachable.
_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")
_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` -> ``(["a", "b"], 1)``; a one-line ``CliError`` for anything else."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CliError(f"--config {text!r}: expected KEY=VALUE, e.g. --config resources.slots_per_trial=2")
    path = key.split(".")
    bad = next((part for part in path if not _KEY.match(part)), None)
    if bad is not None:
        raise CliError(f"--config {text!r}: {key!r} is not a dotted config key (bad part {bad!r})")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        reason = str(exc).splitlines()[0]
        raise CliError(f"--config {key}: the value is not valid YAML ({reason})") from None
    if isinstance(value, str) and _EXPONENT.match(value):
        value = float(value)  # YAML 1.1 reads 1e-3 as a string; nobody means that for a learning rate
    return path, value


def apply_to(config: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set each ``KEY=VALUE`` in ``config`` (changed in place and returned)."""
    for text in overrides:
        path, value = parse_override(text)
        node = config
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if child is None:  # `key:` with nothing after it is an empty section in YAML
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise CliError(f"--config {'.'.join(path)}: {where} is {type(child).__name__}, not a mapping")
            node = child
        node[path[-1]] = value
    return config


def apply_overrides(config_text: str, overrides: Iterable[str]) -> str:
    """The config text with ``overrides`` applied; unchanged (comments kept) when there are none."""
    overrides = list(overrides)
    if not overrides:
        return config_text
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError as exc:
        raise CliError(f"the config is not valid YAML: {str(exc).splitlines()[0]}") from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise CliError(f"the config is {type(config).__name__}, not a mapping: --config cannot apply")
    text: str = yaml.safe_dump(apply_to(config, overrides), sort_keys=False, allow_unicode=True)
    return text
