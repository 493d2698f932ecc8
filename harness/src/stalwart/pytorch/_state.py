"""Random number generator states and data positions: what an exact resume needs besides weights."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

try:  # numpy is optional for torch; its RNG is only saved when it is there
    import numpy as np
except ImportError:  # pragma: no cover
    np = None  # type: ignore[assignment]


def data_generators(data: Iterable[Any]) -> list[torch.Generator]:
    """The explicit generators a DataLoader shuffles with (its own and its samplers'), deduplicated."""
    found: list[torch.Generator] = []
    candidates = [getattr(data, "generator", None)]
    sampler = getattr(data, "sampler", None)
    candidates.append(getattr(sampler, "generator", None))
    batch_sampler = getattr(data, "batch_sampler", None)
    candidates.append(getattr(getattr(batch_sampler, "sampler", None), "generator", None))
    for generator in candidates:
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def capture_rng(generators: list[torch.Generator]) -> dict[str, Any]:
    """Every RNG a training step or a shuffle can draw from, as a state tree ``save_state`` accepts."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators],
    }
    if np is not None:
        state["numpy"] = np.random.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: list[torch.Generator]) -> None:
    """Put back what ``capture_rng`` saw; generators are matched by position."""
    random.setstate(_python_state(state["python"]))
    torch.set_rng_state(state["torch"].cpu())
    for generator, saved in zip(generators, state.get("generators") or [], strict=False):
        generator.set_state(saved.cpu())
    if np is not None and state.get("numpy") is not None:
        np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _python_state(saved: Any) -> tuple[Any, ...]:
    # A state tree may come back with lists where tuples went in; random.setstate wants tuples.
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs, as a trial's seed does.

    Example::

        stalwart.pytorch.seed_all(core_context.info.trial_seed)
        model = build_model()  # the same initial weights on every run of this trial
    """
    random.seed(seed)
    torch.manual_seed(seed)
    if np is not None:
        np.random.seed(seed % 2**32)


def skip_batches(data: Iterable[Any], iterator: Iterator[Any], count: int) -> None:
    """Advance a fresh epoch iterator by ``count`` batches.

    A single-process DataLoader over a map-style dataset skips by drawing only the sampler's
    indices, so no sample is loaded; anything else (worker processes prefetch, iterable datasets
    produce their own order) is advanced by reading the batches and dropping them.
    """
    if count <= 0:
        return
    sampler_iter = getattr(iterator, "_sampler_iter", None)
    fast = (
        isinstance(data, DataLoader)
        and data.num_workers == 0
        and not isinstance(data.dataset, IterableDataset)
        and sampler_iter is not None
        and isinstance(getattr(iterator, "_num_yielded", None), int)
    )
    if fast:
        assert sampler_iter is not None
        for _ in range(count):
            next(sampler_iter)
        iterator._num_yielded += count  # type: ignore[attr-defined]
        return
    for _ in range(count):
        next(iterator)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a batch (nested tuples, lists, dicts) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple | list):
        moved = [to_device(item, device) for item in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    return batch


def batch_size_of(targets: Any) -> int:
    """How many samples a batch holds, for weighting per-batch means."""
    if isinstance(targets, torch.Tensor) and targets.dim() > 0:
        return int(targets.shape[0])
    try:
        return len(targets)
    except TypeError:
        return 1
