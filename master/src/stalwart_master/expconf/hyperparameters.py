"""Hyperparameter specs: constants, numeric ranges and categorical choices, nested in groups.

A value is read the way a person writes it: a mapping with a ``type`` key is a spec, any other
mapping is a group of further hyperparameters, and everything else (scalars, lists) is a constant.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeAlias

from pydantic import BaseModel, Discriminator, Field, Tag, model_validator
from typing_extensions import TypeAliasType

from stalwart_master.expconf.common import INT64_MAX, INT64_MIN, Loc, Section, field_error

HYPERPARAMETER_TYPES = ("const", "int", "double", "log", "categorical")
NUMERIC_TYPES = ("int", "double", "log")

# Bounded so that building a grid axis can never take the master's memory.
Count = Annotated[
    int | None, Field(ge=1, le=100_000, description="Points on the grid; used by the grid searcher.")
]


class ConstHyperparameter(Section):
    """A value that is the same in every trial, written out explicitly."""

    type: Literal["const"]
    val: Any


def _check_range(minval: float, maxval: float) -> None:
    if minval >= maxval:
        raise field_error(("minval",), "must be less than maxval", minval)
    # Sampling and grid spacing compute maxval - minval; it must not overflow to inf.
    if not math.isfinite(float(maxval) - float(minval)):
        raise field_error(
            ("maxval",), "is too far from minval: maxval - minval must be a finite number", maxval
        )


def _finite_power(base: float, exponent: float) -> bool:
    try:
        return math.isfinite(base**exponent)
    except OverflowError:
        return False


Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]


class IntHyperparameter(Section):
    """An integer drawn from ``minval``..``maxval``, both ends included."""

    type: Literal["int"]
    minval: Int64
    maxval: Int64
    count: Count = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        _check_range(self.minval, self.maxval)
        return self


class DoubleHyperparameter(Section):
    """A float drawn uniformly from ``minval``..``maxval``."""

    type: Literal["double"]
    minval: float
    maxval: float
    count: Count = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        _check_range(self.minval, self.maxval)
        return self


class LogHyperparameter(Section):
    """``base ** x`` with the exponent ``x`` drawn uniformly from ``minval``..``maxval``."""

    type: Literal["log"]
    minval: float = Field(description="Smallest exponent.")
    maxval: float = Field(description="Largest exponent.")
    base: float = Field(default=10.0, gt=0)
    count: Count = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        _check_range(self.minval, self.maxval)
        if self.base == 1:
            raise field_error(("base",), "must not be 1", self.base)
        for end in ("minval", "maxval"):
            if not _finite_power(self.base, getattr(self, end)):
                raise field_error((end,), f"base ** {end} must be a finite number", getattr(self, end))
        return self


class CategoricalHyperparameter(Section):
    """One of a fixed list of values; grid search tries each of them."""

    type: Literal["categorical"]
    vals: list[Any] = Field(min_length=1)


HyperparameterSpec = Annotated[
    ConstHyperparameter
    | IntHyperparameter
    | DoubleHyperparameter
    | LogHyperparameter
    | CategoricalHyperparameter,
    Field(discriminator="type"),
]


def _kind(value: Any) -> str:
    if isinstance(value, BaseModel):  # dumping a validated config
        return "spec"
    if isinstance(value, dict):
        return "spec" if "type" in value else "group"
    return "const"


# The tags ("spec", "group", "const") show up in pydantic's error locations; messages.py removes
# them by position, so they never reach a user.
if TYPE_CHECKING:  # mypy cannot follow this recursive alias; to it a value is simply Any
    HyperparameterValue: TypeAlias = Any
else:
    HyperparameterValue = TypeAliasType(
        "HyperparameterValue",
        Annotated[
            Annotated[HyperparameterSpec, Tag("spec")]
            | Annotated[dict[str, "HyperparameterValue"], Tag("group")]
            | Annotated[Any, Tag("const")],
            Discriminator(_kind),
        ],
    )

Hyperparameters = dict[str, HyperparameterValue]


def iter_specs(raw: Any, loc: Loc = ()) -> list[tuple[Loc, dict[str, Any]]]:
    """Every spec mapping in a raw (unvalidated) hyperparameter tree, with its pydantic location.

    The location includes the union tags so it lines up with pydantic's own error locations.
    """
    found: list[tuple[Loc, dict[str, Any]]] = []
    if not isinstance(raw, dict):
        return found
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, dict):
            continue
        if "type" in value:
            found.append(((*loc, key, "spec"), value))
        else:
            found.extend(iter_specs(value, (*loc, key, "group")))
    return found
