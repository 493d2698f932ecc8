"""Hiding secrets (storage keys, passwords, tokens) wherever a config or a storage section is shown.

This is the one masking rule of the project. The master imports it for every answer it gives
(experiment ``config`` and ``original_config``, checkpoint ``storage``, lineage) and the CLI for
everything it prints, so the two can never disagree about what counts as a secret. It lives in the
harness because the CLI must not depend on the master, while the master already depends on the
harness; it needs nothing beyond PyYAML, which the harness has anyway.

What is a secret:

- the value of a key named like a credential (``secret_key``, ``access_key``, ``session_token``,
  ``password``, ``token``, ...), at any depth; a mapping or list under such a key is masked leaf by
  leaf (``data.secrets`` is Determined's place for them);
- the value of an environment-variable-style name (upper case) that says what it is, such as
  ``AWS_SECRET_ACCESS_KEY``, ``HF_TOKEN`` or ``DB_PASSWORD``, as a mapping key or as ``NAME=value``
  in a list (``environment_variables`` in either form).

``access_key`` is masked along with ``secret_key``, as Determined does: on S3-compatible stores
it is often the account name, and nobody needs it to read a config.

Example::

    mask_config({"checkpoint_storage": {"type": "s3", "secret_key": "abc"}})
    # {'checkpoint_storage': {'type': 's3', 'secret_key': '********'}}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

#: What a masked value reads as (Determined's spelling).
MASK = "********"

#: Keys whose values are secrets, compared in lower case with ``-`` read as ``_``.
SECRET_KEYS = frozenset(
    {
        "secret_key",
        "access_key",
        "session_token",
        "password",
        "token",
        "api_key",
        "private_key",
        "connection_string",
        "credential",
        "credentials",
        "secrets",
        # Determined's environment.registry_auth: the whole block is a credential.
        "registry_auth",
    }
)

# Upper-case names only: environment variables are written that way, and hyperparameters such as
# ``max_tokens`` or ``pad_token`` must stay readable.
_SECRET_NAME = re.compile(
    r"[A-Z0-9_]*(?:SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY|CREDENTIAL)[A-Z0-9_]*"
)
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
# In a comment: "secret_key: abc", "password = abc", "AWS_SECRET_ACCESS_KEY=abc".
_COMMENT_SECRET = re.compile(
    r"(?i:\b(?:" + "|".join(sorted(SECRET_KEYS)) + r")\b)\s*[:=]\s*(\S+)"
    r"|\b" + _SECRET_NAME.pattern + r"\s*[:=]\s*(\S+)"
)


def is_secret_key(key: Any) -> bool:
    """Whether the value under this mapping key is a secret."""
    if not isinstance(key, str):
        return False
    return key.lower().replace("-", "_") in SECRET_KEYS or _SECRET_NAME.fullmatch(key) is not None


def _secret_assignment(text: str) -> str | None:
    """``NAME=********`` for a ``NAME=value`` string whose name is a secret's, else None."""
    match = _ASSIGNMENT.fullmatch(text)
    if match and is_secret_key(match.group(1)):
        return f"{match.group(1)}={MASK}"
    return None


def _mask_all(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _mask_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_all(v) for v in value]
    return None if value is None else MASK


def mask_config(value: Any) -> Any:
    """A copy of ``value`` (a config, a storage section, any JSON-like data) with secrets masked.

    Example::

        mask_config({"environment": {"environment_variables": ["HF_TOKEN=hf_abc", "DEBUG=1"]}})
        # {'environment': {'environment_variables': ['HF_TOKEN=********', 'DEBUG=1']}}
    """
    return _masked(value, texts=False)


def mask_answer(value: Any) -> Any:
    """``mask_config`` for a whole API answer (an experiment, a page of them, a checkpoint, a
    lineage), whose ``original_config`` YAML text is masked with ``mask_yaml_text`` as well."""
    return _masked(value, texts=True)


def _masked(value: Any, *, texts: bool) -> Any:
    if isinstance(value, Mapping):
        return {k: _masked_entry(k, v, texts) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [
            (_secret_assignment(v) or v) if isinstance(v, str) else _masked(v, texts=texts) for v in value
        ]
    return value


def _masked_entry(key: Any, value: Any, texts: bool) -> Any:
    if is_secret_key(key):
        return _mask_all(value)
    if texts and key == "original_config" and isinstance(value, str):
        return mask_yaml_text(value)
    return _masked(value, texts=texts)


# --- YAML text --------------------------------------------------------------------------------------


def _loader() -> type[Any]:
    loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there
    return loader


def _secret_scalars(root: yaml.Node) -> list[tuple[yaml.ScalarNode, str]]:
    """Each scalar node to mask with its masked value. Every node is visited once (per "under a
    secret key" flag), so aliases cannot make the walk exponential."""
    found: list[tuple[yaml.ScalarNode, str]] = []
    seen: set[tuple[int, bool, bool]] = set()
    # (node, under a secret key, an item of a list: where NAME=value strings are read)
    stack: list[tuple[yaml.Node, bool, bool]] = [(root, False, False)]
    while stack:
        node, secret, item = stack.pop()
        if (id(node), secret, item) in seen:
            continue
        seen.add((id(node), secret, item))
        if isinstance(node, yaml.ScalarNode):
            if secret and node.tag != "tag:yaml.org,2002:null":
                found.append((node, MASK))
            elif item and isinstance(node.value, str) and (masked := _secret_assignment(node.value)):
                found.append((node, masked))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, secret, True) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, child in node.value:
                under = secret or (isinstance(key, yaml.ScalarNode) and is_secret_key(key.value))
                stack.append((child, under, False))
    return found


_PROPERTIES = re.compile(r"(?:[&!][^\s]*\s+)+")


def _replaced(text: str, node: yaml.ScalarNode, masked: str) -> tuple[int, int, str]:
    """The span of a scalar's value (its anchor and tag kept) and what to put there."""
    start, end = node.start_mark.index, node.end_mark.index
    properties = _PROPERTIES.match(text, start, end)
    if properties:
        start = properties.end()
    body = text[start:end]
    # A block scalar's span ends after its line break(s); keep them so the next key stays put.
    trailing = body[len(body.rstrip()) :]
    return start, end, json.dumps(masked) + trailing


def _mask_written(text: str) -> str:
    """Every ``secret_key: value`` / ``NAME=value`` written in ``text``, value masked."""

    def masked(match: re.Match[str]) -> str:
        group = 1 if match.group(1) else 2
        return match.group(0)[: match.start(group) - match.start()] + MASK

    return _COMMENT_SECRET.sub(masked, text)


def _mask_comments(text: str, spans: list[tuple[int, int]]) -> str:
    """Mask ``secret_key: value`` written in comments (an old key left commented out)."""
    inside = sorted(spans)
    out: list[str] = []
    position = 0
    index = 0
    for match in re.finditer(r"(?:^|(?<=[ \t]))#[^\n]*", text, re.MULTILINE):
        while index < len(inside) and inside[index][1] <= match.start():
            index += 1
        if index < len(inside) and inside[index][0] <= match.start() < inside[index][1]:
            continue  # a '#' inside a quoted or multi-line scalar, not a comment
        out.append(text[position : match.start()])
        out.append(_mask_written(match.group(0)))
        position = match.end()
    out.append(text[position:])
    return "".join(out)


def mask_yaml_text(text: str) -> str:
    """``text`` (a YAML config as submitted) with every secret value replaced in place.

    Comments, order and layout are kept. The result is checked by loading it again: if it does
    not read as the masked config (YAML this cannot edit in place), the masked config is dumped
    anew instead, without comments. In text that is not YAML at all, whatever reads like
    ``secret_key: value`` or ``NAME=value`` is masked.

    Example::

        mask_yaml_text("checkpoint_storage:\\n  type: s3  # team bucket\\n  secret_key: abc\\n")
        # 'checkpoint_storage:\\n  type: s3  # team bucket\\n  secret_key: "********"\\n'
    """
    try:
        root = yaml.compose(text, Loader=_loader())
        expected = mask_config(yaml.load(text, Loader=_loader()))
    except yaml.YAMLError:
        return _mask_written(text)  # not YAML: whatever reads like a secret assignment goes
    if root is None:
        return _mask_written(text)  # comments only
    # One edit per span; a node reached both under a secret key and elsewhere is masked whole.
    edits: dict[tuple[int, int], str] = {}
    for node, masked in _secret_scalars(root):
        start, end, replacement = _replaced(text, node, masked)
        if (start, end) not in edits or masked == MASK:
            edits[(start, end)] = replacement
    masked_text = text
    for (start, end), replacement in sorted(edits.items(), reverse=True):
        masked_text = masked_text[:start] + replacement + masked_text[end:]
    try:
        root = yaml.compose(masked_text, Loader=_loader())
        spans = _scalar_spans(root)
        masked_text = _mask_comments(masked_text, spans)
        if yaml.load(masked_text, Loader=_loader()) == expected:
            return masked_text
    except yaml.YAMLError:
        pass
    dumped: str = yaml.safe_dump(expected, sort_keys=False, allow_unicode=True)
    return dumped


def _scalar_spans(root: yaml.Node | None) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            spans.append((node.start_mark.index, node.end_mark.index))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    return spans


def without_masked(storage: Mapping[str, Any]) -> dict[str, Any]:
    """A storage section as shown by the master, minus values that are only the mask, so opening
    it falls back to the reader's own credentials (environment, instance role) instead of
    presenting ``********`` as a key."""
    return {k: v for k, v in storage.items() if v != MASK}
