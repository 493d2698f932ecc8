"""The search space: walking a validated hyperparameter tree to grid points or random samples.

A validated tree holds three kinds of values: spec models (ranges, choices, explicit constants),
plain dicts (groups, kept as nested dicts in every trial's hparams) and anything else (constants).
Both searchers visit the searchable specs in the same depth-first, as-written order, so "axis i" and
"the i-th draw" always mean the same hyperparameter.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

from stalwart_master.expconf.hyperparameters import (
    CategoricalHyperparameter,
    ConstHyperparameter,
    DoubleHyperparameter,
    IntHyperparameter,
    LogHyperparameter,
)

SearchableSpec = IntHyperparameter | DoubleHyperparameter | LogHyperparameter | CategoricalHyperparameter
_SEARCHABLE = (IntHyperparameter, DoubleHyperparameter, LogHyperparameter, CategoricalHyperparameter)


def searchable_specs(tree: dict[str, Any]) -> list[SearchableSpec]:
    """The specs that vary between trials, in depth-first order of the config as written."""
    found: list[SearchableSpec] = []
    for value in tree.values():
        if isinstance(value, _SEARCHABLE):
            found.append(value)
        elif isinstance(value, dict):
            found.extend(searchable_specs(value))
    return found


def build_hparams(tree: dict[str, Any], values: Iterator[Any]) -> dict[str, Any]:
    """The trial's hparams: groups kept as dicts, constants copied, each spec taking the next value.

    ``values`` must yield one value per entry of ``searchable_specs(tree)``, in that order.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, _SEARCHABLE):
            out[key] = next(values)
        elif isinstance(value, ConstHyperparameter):
            out[key] = copy.deepcopy(value.val)
        elif isinstance(value, dict):
            out[key] = build_hparams(value, values)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- grid -----------------------------------------------------------------------------------------


def _spaced(minval: float, maxval: float, count: int) -> list[float]:
    if count == 1:
        # Both ends cannot be included with one point; the middle is the least biased choice.
        return [(minval + maxval) / 2]
    step = (maxval - minval) / (count - 1)
    # The last point is maxval exactly, not minval + step * (count - 1) with its rounding error.
    return [minval + step * i for i in range(count - 1)] + [maxval]


def _round_half_up(x: float) -> int:
    # round() would round halves to even, so 2.5 -> 2 but 3.5 -> 4; a grid should not zigzag.
    return math.floor(x + 0.5)


def grid_axis(spec: SearchableSpec) -> list[Any]:
    """The values one hyperparameter takes on the grid, in ascending (or as-written) order."""
    if isinstance(spec, CategoricalHyperparameter):
        return list(spec.vals)
    if spec.count is None:
        raise ValueError(f"a {spec.type} hyperparameter needs a count for grid search")
    points = _spaced(float(spec.minval), float(spec.maxval), spec.count)
    if isinstance(spec, IntHyperparameter):
        return list(dict.fromkeys(_round_half_up(p) for p in points))
    if isinstance(spec, LogHyperparameter):
        return [spec.base**p for p in points]
    return points


def grid_size(tree: dict[str, Any]) -> int:
    """Number of grid points: the product of every axis' length (1 when nothing varies)."""
    return math.prod(len(grid_axis(spec)) for spec in searchable_specs(tree))


def grid_point(tree: dict[str, Any], axes: list[list[Any]], ordinal: int) -> dict[str, Any]:
    """Grid point ``ordinal`` in the order of ``itertools.product(*axes)``: the last axis varies fastest.

    Computed by mixed-radix digits rather than by iterating, so any point is O(axes) to reach.
    """
    picks: list[Any] = []
    rest = ordinal
    for axis in reversed(axes):
        rest, digit = divmod(rest, len(axis))
        picks.append(axis[digit])
    if rest:
        raise IndexError(f"grid point {ordinal} is past the end of the grid")
    picks.reverse()
    return build_hparams(tree, iter(copy.deepcopy(picks)))


# --- random ---------------------------------------------------------------------------------------


def _sampler(rng: random.Random) -> Callable[[SearchableSpec], Any]:
    def sample(spec: SearchableSpec) -> Any:
        if isinstance(spec, IntHyperparameter):
            return rng.randint(spec.minval, spec.maxval)
        if isinstance(spec, DoubleHyperparameter):
            return rng.uniform(spec.minval, spec.maxval)
        if isinstance(spec, LogHyperparameter):
            return spec.base ** rng.uniform(spec.minval, spec.maxval)
        return copy.deepcopy(rng.choice(spec.vals))

    return sample


def random_point(tree: dict[str, Any], seed: int) -> dict[str, Any]:
    """One sample of the whole space from an RNG seeded with ``seed`` (uniform per hyperparameter)."""
    sample = _sampler(random.Random(seed))
    return build_hparams(tree, (sample(spec) for spec in searchable_specs(tree)))
