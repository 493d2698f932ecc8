"""Which validation reports a searcher needs, read from the stored searcher config alone.

The master checks this on every metrics report, before it locks the experiment or restores the
searcher, so a search that ignores validations (single, grid, random) costs nothing per report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Feed:
    metric: str
    time_metric: str | None  # None: the searcher needs the metric only, not how far training got
    max_time: float | None


def validation_feed(searcher: dict[str, Any]) -> Feed | None:
    """What to pass to ``Searcher.on_validation`` for this searcher config, or None: nothing."""
    name = searcher.get("name")
    if name in ("adaptive_asha", "async_halving"):
        return Feed(str(searcher["metric"]), str(searcher["time_metric"]), float(searcher["max_time"]))
    if name == "bayesian":
        pruning = searcher.get("pruning")
        if isinstance(pruning, dict):
            return Feed(str(searcher["metric"]), str(pruning["time_metric"]), float(pruning["max_time"]))
        return Feed(str(searcher["metric"]), None, None)
    return None
