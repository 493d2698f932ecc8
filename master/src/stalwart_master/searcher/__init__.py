"""Searchers: which trials an experiment runs, in pure logic the master persists as JSON.

>>> searcher = make_searcher(config)              # refuses searchers we cannot run yet
>>> ops = searcher.initial_operations()           # Create ops, at most max_concurrent_trials
>>> ops = searcher.on_trial_closed(request_id)    # may Create the next trial, finally Shutdown
>>> ops = searcher.on_validation(request_id, metric, time)  # ASHA-style searchers may Stop it
>>> ops = searcher.on_trial_exited_early(request_id, EarlyExit.INVALID_HP)  # closed, replaced
>>> row.searcher_state = searcher.state()         # same transaction as applying the ops
>>> searcher = Searcher.restore(config, row.searcher_state)  # after a master restart
"""

from stalwart_master.searcher.asha import AdaptiveASHASearcher, AsyncHalvingSearcher
from stalwart_master.searcher.base import Create, EarlyExit, Op, Searcher, Shutdown, Stop
from stalwart_master.searcher.bayesian import BayesianSearcher
from stalwart_master.searcher.searchers import GridSearcher, RandomSearcher, SingleSearcher, make_searcher
from stalwart_master.searcher.space import grid_axis, grid_size

__all__ = [
    "AdaptiveASHASearcher",
    "AsyncHalvingSearcher",
    "BayesianSearcher",
    "Create",
    "EarlyExit",
    "GridSearcher",
    "Op",
    "RandomSearcher",
    "Searcher",
    "Shutdown",
    "SingleSearcher",
    "Stop",
    "grid_axis",
    "grid_size",
    "make_searcher",
]
