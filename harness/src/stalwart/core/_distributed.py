"""Where this process sits in a multi-process trial (torchrun's environment conventions)."""

from __future__ import annotations

import os
from collections.abc import Mapping


class DistributedContext:
    """Rank and size of this process; a single process is rank 0 of 1.

    Only the chief (rank 0) reports metrics and registers checkpoints. There are no collectives
    here: use ``torch.distributed`` for those.

    Example::

        dist = stalwart.core.DistributedContext.from_torch_distributed()
        with stalwart.core.init(distributed=dist) as core_context:
            ...
    """

    def __init__(
        self,
        *,
        rank: int = 0,
        size: int = 1,
        local_rank: int | None = None,
        local_size: int | None = None,
        cross_rank: int | None = None,
        cross_size: int | None = None,
    ) -> None:
        local_rank = rank if local_rank is None else local_rank
        local_size = size if local_size is None else local_size
        cross_rank = 0 if cross_rank is None else cross_rank
        cross_size = 1 if cross_size is None else cross_size
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is not in [0, {size})")
        if not 0 <= local_rank < local_size:
            raise ValueError(f"local_rank {local_rank} is not in [0, {local_size})")
        if not 0 <= cross_rank < cross_size:
            raise ValueError(f"cross_rank {cross_rank} is not in [0, {cross_size})")
        self.rank = rank
        self.size = size
        self.local_rank = local_rank
        self.local_size = local_size
        self.cross_rank = cross_rank
        self.cross_size = cross_size

    @classmethod
    def from_torch_distributed(cls, env: Mapping[str, str] | None = None) -> DistributedContext:
        """Read RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE.

        Example::

            dist = DistributedContext.from_torch_distributed()  # inside torchrun
        """
        env = os.environ if env is None else env

        def read(name: str, default: int | None) -> int | None:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None

        rank = read("RANK", None)
        size = read("WORLD_SIZE", None)
        if rank is None or size is None:
            raise ValueError("RANK and WORLD_SIZE must be set (is this running under torchrun?)")
        return cls(
            rank=rank,
            size=size,
            local_rank=read("LOCAL_RANK", rank),
            local_size=read("LOCAL_WORLD_SIZE", size),
            cross_rank=read("GROUP_RANK", 0),
            cross_size=read("GROUP_WORLD_SIZE", 1),
        )

    @property
    def is_chief(self) -> bool:
        """True on rank 0, the process that talks to the master for the whole trial."""
        return self.rank == 0

    def get_rank(self) -> int:
        """Determined's spelling of ``rank``."""
        return self.rank

    def get_size(self) -> int:
        """Determined's spelling of ``size``."""
        return self.size

    def get_local_rank(self) -> int:
        """Determined's spelling of ``local_rank``."""
        return self.local_rank

    def get_local_size(self) -> int:
        """Determined's spelling of ``local_size``."""
        return self.local_size

    def get_cross_rank(self) -> int:
        """Determined's spelling of ``cross_rank``."""
        return self.cross_rank

    def get_cross_size(self) -> int:
        """Determined's spelling of ``cross_size``."""
        return self.cross_size

    def __repr__(self) -> str:
        return (
            f"DistributedContext(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, "
            f"local_size={self.local_size}, cross_rank={self.cross_rank}, cross_size={self.cross_size})"
        )
