"""A safe YAML loader with hard limits, for text that comes from users.

``yaml.SafeLoader`` never runs code, but it will happily build a graph whose aliases expand to
billions of nodes ("billion laughs"), and its composer recurses once per nesting level. Both are
refused here *while composing*: a running count of values, where an alias counts as the whole
subtree it stands for, stops a bomb after a few dozen events, before anything walks the expansion.
Construction is ``yaml.SafeConstructor`` (no Python objects), minus tags JSON cannot hold, and an
integer literal is only computed when it is short: base-60 literals (``1:0:0:...``) cost quadratic
time, and Python refuses to print an integer of more than 4,300 digits.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import Mark, MarkedYAMLError
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from stalwart_master.errors import BadRequest
from stalwart_master.expconf.common import INT64_MAX

try:
    from yaml.cyaml import CParser
except ImportError:  # PyYAML built without libyaml
    CParser = None

MAX_DEPTH = 64
# A large real config has a few hundred values; the cap bounds the CPU one request can cost.
MAX_NODES = 20_000
MAX_ALIASES = 1_000

# Longer literals (sign and underscores aside) are not computed; 64 bits need at most 66 characters
# in any YAML notation (0b and 64 binary digits).
MAX_INT_LITERAL = 70
# What such a literal loads as: a value just outside 64 bits with the literal's sign, which every
# bound refuses, so the error names the field (parse.py) instead of this loader.
TOO_LONG_INT = INT64_MAX + 1

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# Tags whose values are not JSON-able (bytes, sets, ordered pairs, datetimes); a config has no use
# for them and they would break storing the config as JSONB.
_REFUSED_TAGS = ("binary", "set", "omap", "pairs", "timestamp")


class _LimitExceeded(Exception):
    def __init__(self, message: str, mark: Mark | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _Limits(Composer):  # type: ignore[misc,unused-ignore]
    """Composer that counts depth, alias uses and expanded values while it builds the node graph."""

    def _init_limits(self, max_depth: int, max_nodes: int, max_aliases: int) -> None:
        self._max_depth = max_depth
        self._max_nodes = max_nodes
        self._max_aliases = max_aliases
        self._depth = 0
        self._aliases = 0
        # Values seen so far with every alias counted as the whole subtree it stands for: this is
        # the size of the fully expanded document, known long before anything expands it.
        self._expanded = 0
        # Expanded size of each finished node, keyed by id(); the nodes stay alive in the graph so
        # ids are never reused while loading.
        self._sizes: dict[int, int] = {}

    def _count(self, values: int, mark: Mark) -> None:
        self._expanded += values
        if self._expanded > self._max_nodes:
            raise _LimitExceeded(f"more than {self._max_nodes} values once aliases are expanded", mark)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor) if event.anchor is not None else None
            if target is not None:
                if id(target) not in self._sizes:
                    raise _LimitExceeded("an alias refers to a node that contains it", event.start_mark)
                self._aliases += 1
                if self._aliases > self._max_aliases:
                    raise _LimitExceeded(f"more than {self._max_aliases} aliases", event.start_mark)
                self._count(self._sizes[id(target)], event.start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return,unused-ignore]

        self._count(1, event.start_mark)
        nested = isinstance(event, (SequenceStartEvent, MappingStartEvent))
        if nested:
            self._depth += 1
            if self._depth > self._max_depth:
                raise _LimitExceeded(f"nested deeper than {self._max_depth} levels", event.start_mark)
        node: Node = super().compose_node(parent, index)
        if nested:
            self._depth -= 1
        size = 1
        if isinstance(node, SequenceNode):
            size += sum(self._sizes[id(child)] for child in node.value)
        elif isinstance(node, MappingNode):
            size += sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        self._sizes[id(node)] = size
        return node


class _Constructor(SafeConstructor):  # type: ignore[misc,unused-ignore]
    """SafeConstructor that refuses repeated keys and values JSON cannot hold."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, IndexError):
            # An explicit tag on text it cannot read (``!!int abc``, ``!!bool maybe``).
            shown = str(node.value)[:40] if isinstance(node, ScalarNode) else node.id
            kind = str(node.tag).rsplit(":", 1)[-1]
            raise ConstructorError(None, None, f"{shown!r} is not a valid {kind}", node.start_mark) from None

    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        if len(text.lstrip("+-")) > MAX_INT_LITERAL:
            return -TOO_LONG_INT - 1 if text.startswith("-") else TOO_LONG_INT
        return super().construct_yaml_int(node)  # type: ignore[no-any-return,unused-ignore]

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        # A repeated key silently overwrites in PyYAML; in a config that hides a mistake.
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return,unused-ignore]


def _refuse_tag(loader: SafeConstructor, node: Node) -> Any:
    raise ConstructorError(None, None, f"the tag {node.tag} is not allowed here", node.start_mark)


for _name in _REFUSED_TAGS:
    _Constructor.add_constructor(f"tag:yaml.org,2002:{_name}", _refuse_tag)
_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_yaml_int)


class _Resolver(Resolver):  # type: ignore[misc,unused-ignore]
    """Resolver without the timestamp rule, so dates stay plain strings."""


_Resolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}


class _PyLoader(Reader, Scanner, Parser, _Limits, _Constructor, _Resolver):  # type: ignore[misc,unused-ignore]
    """The ``yaml.SafeLoader`` stack with the limits; used when libyaml is not installed."""

    def __init__(self, text: str, max_depth: int, max_nodes: int, max_aliases: int) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
        self._init_limits(max_depth, max_nodes, max_aliases)


_Loader: type[Any] = _PyLoader
if CParser is not None:
    # libyaml only produces the events, which is where pure Python spends its time (about 100 KB/s);
    # composing, the limits and construction stay the Python code above, listed first in the MRO.

    class _CLoader(_Limits, CParser, _Constructor, _Resolver):  # type: ignore[misc,unused-ignore]
        def __init__(self, text: str, max_depth: int, max_nodes: int, max_aliases: int) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            _Constructor.__init__(self)
            _Resolver.__init__(self)
            self._init_limits(max_depth, max_nodes, max_aliases)

    _Loader = _CLoader

USING_LIBYAML = CParser is not None


def _position(mark: Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"


def _position_extra(mark: Mark | None) -> dict[str, Any]:
    return {"line": mark.line + 1, "column": mark.column + 1} if mark is not None else {}


def load_yaml(
    text: str,
    *,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
    max_aliases: int = MAX_ALIASES,
) -> Any:
    """Parse one YAML document safely; raise ``BadRequest`` for bad syntax or anything too big.

    An integer literal longer than ``MAX_INT_LITERAL`` characters loads as ``TOO_LONG_INT`` (or its
    negative), outside the 64 bits a config may hold.

    >>> load_yaml("searcher: {name: single}")
    {'searcher': {'name': 'single'}}
    """
    loader = None
    try:
        loader = _Loader(text, max_depth, max_nodes, max_aliases)
        return loader.get_single_data()
    except _LimitExceeded as exc:
        raise BadRequest(
            f"YAML refused: {exc.message} (at {_position(exc.mark)})",
            title="YAML too large or too deep",
            extra=_position_extra(exc.mark),
        ) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        raise BadRequest(
            f"{problem} at {_position(mark)}", title="Invalid YAML", extra=_position_extra(mark)
        ) from None
    except ReaderError as exc:
        # A bad character is reported by offset; turn it into the line and column people use.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise BadRequest(
            f"unacceptable character #x{exc.character:04x} at line {line}, column {column}",
            title="Invalid YAML",
            extra={"line": line, "column": column},
        ) from None
    except yaml.YAMLError as exc:
        raise BadRequest(str(exc), title="Invalid YAML") from None
    except RecursionError:
        raise BadRequest("YAML refused: nested too deeply", title="YAML too large or too deep") from None
    finally:
        if loader is not None:
            loader.dispose()
