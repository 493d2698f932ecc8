"""Which checkpoints are "best": shared by the CLI (``e lc --best``, ``e download``) and the SDK."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from stalwart.client.models import Checkpoint


def smaller_is_better(config: Mapping[str, Any]) -> bool:
    """The searcher's direction in an experiment config (Determined's default: smaller is better)."""
    searcher = config.get("searcher")
    return not isinstance(searcher, Mapping) or searcher.get("smaller_is_better", True) is not False


def best_checkpoints(
    checkpoints: Iterable[Checkpoint], config: Mapping[str, Any], n: int, *, smaller: bool | None = None
) -> list[Checkpoint]:
    """The ``n`` checkpoints with the best searcher metric (Determined's ``--best N``), best first.

    Checkpoints without a metric, or whose files GC already deleted, are never "best".

    Example::

        best = best_checkpoints(client.list_checkpoints(7), client.get_experiment(7).config, 1)
    """
    sign = 1.0 if (smaller_is_better(config) if smaller is None else smaller) else -1.0
    ranked = [
        c
        for c in checkpoints
        if c.state != "DELETED" and c.searcher_metric is not None and not math.isnan(c.searcher_metric)
    ]
    ranked.sort(key=lambda c: (sign * (c.searcher_metric or 0.0), c.steps_completed))
    return ranked[:n]
