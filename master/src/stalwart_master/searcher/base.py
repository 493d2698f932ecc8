"""The searcher protocol: a fixed budget of trials, created in order under a concurrency cap.

Most searchers decide a trial's hyperparameters from its ordinal (0, 1, 2, ...) and the experiment
seed alone, so the persisted state only needs to say which trials exist, which have closed and which
were replaced after an invalid-hyperparameters exit (adaptive_asha adds its brackets and rungs,
bayesian its observations). That keeps ``state()`` small, JSON-only and exact across a restart.
"""

from __future__ import annotations

import hashlib
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

from stalwart_master.errors import FieldError, Invalid
from stalwart_master.expconf import ExperimentConfig
from stalwart_master.expconf.parse import INVALID_TITLE

STATE_VERSION = 1
SEED_LIMIT = 2**31


def refuse_oversized_search(searcher_name: str, total_trials: int, max_trials: int) -> None:
    """``Invalid`` when a search has more trials than this master allows (``STALWART_MAX_TRIALS``):
    the same answer for creating an experiment and for previewing it."""
    if total_trials <= max_trials:
        return
    grid = searcher_name in ("grid", "single")
    raise Invalid(
        [
            FieldError(
                "hyperparameters" if grid else "searcher.max_trials",
                f"the search has {total_trials} trials, more than this master allows "
                f"({max_trials}, STALWART_MAX_TRIALS)",
            )
        ],
        title=INVALID_TITLE,
    )


@dataclass(frozen=True)
class Create:
    """Start a new trial; ``request_id`` is how the searcher will know it from now on."""

    request_id: str
    trial_seed: int
    hparams: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class Stop:
    """The trial has trained enough: it should checkpoint and exit, and then counts as completed."""

    request_id: str


@dataclass(frozen=True)
class Shutdown:
    """Every trial was created and has closed: the experiment is done searching."""


Op = Create | Stop | Shutdown


class EarlyExit(StrEnum):
    """Why a trial's code said it ends before its training is done (Determined's names)."""

    INVALID_HP = "INVALID_HP"  # the hyperparameters cannot train: not a failure, replaced
    ERRORED = "ERRORED"  # the code failed and says retrying is pointless
    USER_REQUESTED_STOP = "USER_REQUESTED_STOP"  # the code decided it is done


def derive_seed(experiment_seed: int, purpose: str, ordinal: int) -> int:
    """A 64-bit number fixed by (seed, purpose, ordinal), the same on every machine and Python.

    Counter-based rather than one running RNG so that trial N never depends on how many other
    trials were drawn before it, which is what makes restore continue the same sequence.
    """
    digest = hashlib.sha256(f"stalwart:{purpose}:{experiment_seed}:{ordinal}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def trial_seed(experiment_seed: int, ordinal: int) -> int:
    """The seed handed to trial number ``ordinal``; always in ``0 <= seed < 2**31``."""
    return derive_seed(experiment_seed, "trial-seed", ordinal) % SEED_LIMIT


@dataclass
class _Trial:
    request_id: str
    closed: bool = False


class Searcher(ABC):
    """Base of every searcher: owns the trial bookkeeping, subclasses own the search space.

    Subclasses say how many trials there are (``_count_trials``) and what trial ``ordinal`` gets
    (``_hparams``). Not thread-safe: the master drives one experiment's searcher at a time.
    """

    name: ClassVar[str]
    # Whether a trial that exits with invalid hyperparameters gets a replacement (grid: no, a grid
    # point is fixed and sampling it again gives the same point).
    replaces_invalid: ClassVar[bool] = True
    _registry: ClassVar[dict[str, type[Searcher]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Searcher._registry[cls.name] = cls

    def __init__(self, config: ExperimentConfig) -> None:
        if config.searcher.name != self.name:
            raise ValueError(f"{type(self).__name__} cannot run a {config.searcher.name!r} searcher")
        self.config = config
        # parse_experiment_config always fills the seed; 0 only covers configs built by hand.
        self.experiment_seed = config.reproducibility.experiment_seed or 0
        self.max_concurrent_trials = config.searcher.max_concurrent_trials
        self.budget = self._count_trials()
        # Trials that exited with invalid hyperparameters and were replaced, in order; at most
        # ``budget`` of them, so a space where every point is invalid still ends.
        self._replaced: list[str] = []
        self._trials: list[_Trial] = []
        self._by_request: dict[str, _Trial] = {}
        self._open = 0  # created but not closed; kept as a count so a close is O(1)
        self._shutdown = False

    # --- what subclasses provide --------------------------------------------------------------------

    @abstractmethod
    def _count_trials(self) -> int:
        """How many trials the whole search runs (at least one)."""

    @abstractmethod
    def _hparams(self, ordinal: int) -> dict[str, Any]:
        """The hyperparameters of trial ``ordinal``, a pure function of config, seed and ordinal."""

    # --- the protocol the master drives --------------------------------------------------------------

    @classmethod
    def for_config(cls, config: ExperimentConfig) -> type[Searcher]:
        """The searcher class that runs ``config``, or ``Invalid`` naming ``searcher.name``."""
        found = cls._registry.get(config.searcher.name)
        if found is None:
            raise Invalid(
                [FieldError("searcher.name", f"{config.searcher.name} is not supported yet")],
                title=INVALID_TITLE,
            )
        return found

    def initial_operations(self) -> list[Create]:
        """The first trials to create; call once, when the experiment is created."""
        if self._trials:
            raise RuntimeError("initial_operations() was already called for this searcher")
        return self._fill()

    def on_trial_closed(self, request_id: str) -> list[Op]:
        """A trial ended for good (completed, errored past its restarts or killed).

        Closing frees a place under ``max_concurrent_trials``, so the answer may create the next
        trial, and the last close answers ``Shutdown`` (exactly once). Closing the same trial again
        changes nothing and returns no operations, so a repeated event is harmless.
        """
        trial = self._by_request.get(request_id)
        if trial is None:
            raise ValueError(f"unknown searcher request id {request_id!r}")
        if trial.closed:
            return []
        trial.closed = True
        self._open -= 1
        ops: list[Op] = list(self._fill())
        if len(self._trials) == self.total_trials and not self._shutdown and self._open == 0:
            self._shutdown = True
            ops.append(Shutdown())
        return ops

    def on_trial_exited_early(self, request_id: str, reason: EarlyExit | str) -> list[Op]:
        """A trial's code ended it early (Determined's ``ReportTrialSearcherEarlyExit``), now closed.

        ``INVALID_HP``: the searcher creates one more trial in its place (unless it
        ``replaces_invalid`` is false, or ``budget`` replacements were made already). The other
        reasons close the trial like any other end.
        """
        reason = EarlyExit(reason)
        trial = self._by_request.get(request_id)
        if trial is None:
            raise ValueError(f"unknown searcher request id {request_id!r}")
        if trial.closed:
            return []
        if reason == EarlyExit.INVALID_HP and self.replaces_invalid and len(self._replaced) < self.budget:
            self._replaced.append(request_id)
        return self.on_trial_closed(request_id)

    @property
    def total_trials(self) -> int:
        """Trials the whole search runs: the budget plus one for each replaced trial."""
        return self.budget + len(self._replaced)

    def replaced(self, request_id: str) -> bool:
        return request_id in self._replaced

    def on_validation(self, request_id: str, metric: float, time: float | None = None) -> list[Op]:
        """A trial reported its searcher metric (and ``time``, the searcher's ``time_metric``).

        Early-stopping searchers answer ``Stop`` for a trial that should end; the others ignore it.
        """
        if request_id not in self._by_request:
            raise ValueError(f"unknown searcher request id {request_id!r}")
        return []

    def reopen(self, request_id: str) -> None:
        """A closed trial is open again: continuing a terminal experiment resumes its trials.

        Undoes the shutdown if the search had finished, so closing the trial again later answers
        ``Shutdown`` once more. Reopening an open trial changes nothing.
        """
        trial = self._by_request.get(request_id)
        if trial is None:
            raise ValueError(f"unknown searcher request id {request_id!r}")
        if not trial.closed:
            return
        trial.closed = False
        self._open += 1
        self._shutdown = False

    def progress(self) -> float:
        """Fraction of the search done, 0.0 to 1.0: closed trials over all trials."""
        if self._shutdown:
            return 1.0
        return (len(self._trials) - self._open) / self.total_trials

    @property
    def is_shut_down(self) -> bool:
        return self._shutdown

    def state(self) -> dict[str, Any]:
        """Everything needed to resume, as plain JSON types (a fresh copy each call)."""
        return {
            "version": STATE_VERSION,
            "searcher": self.name,
            "experiment_seed": self.experiment_seed,
            "total_trials": self.total_trials,
            "trials": [{"request_id": t.request_id, "closed": t.closed} for t in self._trials],
            "replaced": list(self._replaced),
            "shutdown": self._shutdown,
        }

    @classmethod
    def restore(cls, config: ExperimentConfig, state: dict[str, Any]) -> Searcher:
        """The searcher of ``config`` as it was when ``state`` was taken.

        Refuses (ValueError) a state from another searcher, seed or search space, because
        continuing it would silently mix two different searches in one experiment.
        """
        searcher = cls.for_config(config)(config)
        searcher._load(state)
        return searcher

    # --- internals ------------------------------------------------------------------------------------

    def _fill(self) -> list[Create]:
        limit = self.max_concurrent_trials or self.total_trials
        room = min(limit - self._open, self.total_trials - len(self._trials))
        return [self._create() for _ in range(max(room, 0))]

    def _create(self) -> Create:
        ordinal = len(self._trials)
        trial = _Trial(request_id=str(uuid.uuid4()))
        self._trials.append(trial)
        self._by_request[trial.request_id] = trial
        self._open += 1
        return Create(
            request_id=trial.request_id,
            trial_seed=trial_seed(self.experiment_seed, ordinal),
            hparams=self._hparams(ordinal),
        )

    def _load(self, state: dict[str, Any]) -> Self:
        # Absent in states stored before early exits existed: nothing was replaced then.
        replaced = state.get("replaced", [])
        if not isinstance(replaced, list) or not all(isinstance(r, str) for r in replaced):
            raise ValueError("searcher state has no valid list of replaced trials")
        if len(replaced) > self.budget or (replaced and not self.replaces_invalid):
            raise ValueError("searcher state replaces more trials than the search allows")
        self._replaced = list(replaced)
        expected = {
            "version": STATE_VERSION,
            "searcher": self.name,
            "experiment_seed": self.experiment_seed,
            "total_trials": self.total_trials,
        }
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(f"searcher state has {key}={state.get(key)!r}, the config needs {value!r}")
        trials = state.get("trials")
        if not isinstance(trials, list) or len(trials) > self.total_trials:
            raise ValueError("searcher state has no valid trial list")
        for entry in trials:
            if not isinstance(entry, dict):
                raise ValueError(f"searcher state has a malformed trial entry {entry!r}")
            request_id, closed = entry.get("request_id"), entry.get("closed")
            if not isinstance(request_id, str) or not isinstance(closed, bool):
                raise ValueError(f"searcher state has a malformed trial entry {entry!r}")
            if request_id in self._by_request:
                raise ValueError(f"searcher state lists request id {request_id!r} twice")
            trial = _Trial(request_id, closed)
            self._trials.append(trial)
            self._by_request[request_id] = trial
            self._open += not closed
        # Known, not necessarily closed: a continued experiment may have reopened a replaced trial.
        if not set(self._replaced) <= set(self._by_request):
            raise ValueError("searcher state replaces an unknown trial")
        shutdown = state.get("shutdown")
        if not isinstance(shutdown, bool):
            raise ValueError("searcher state has no valid shutdown flag")
        if shutdown and (len(self._trials) != self.total_trials or self._open):
            raise ValueError("searcher state says shut down while trials are still to run")
        self._shutdown = shutdown
        return self
