"""Searchers: which trials an experiment runs, in pure logic the master persists as JSON.

>>> searcher = make_searcher(config)              # refuses searchers we cannot run yet
>>> ops = searcher.initial_operations()           # Create ops, at most max_concurrent_trials
>>> ops = searcher.on_trial_closed(request_id)    # may Create the next trial, finally Shutdown
>>> row.searcher_state = searcher.state()         # same transaction as applying the ops
>>> searcher = Searcher.restore(config, row.searcher_state)  # after a master restart
"""

from stalwart_master.searcher.base import Create, Op, Searcher, Shutdown
from stalwart_master.searcher.searchers import GridSearcher, RandomSearcher, SingleSearcher, make_searcher
from stalwart_master.searcher.space import grid_axis, grid_size

__all__ = [
    "Create",
    "GridSearcher",
    "Op",
    "RandomSearcher",
    "Searcher",
    "Shutdown",
    "SingleSearcher",
    "grid_axis",
    "grid_size",
    "make_searcher",
]
