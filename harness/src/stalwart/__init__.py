"""Stalwart harness: what training code imports (Core API), the Python SDK and the CLI.

Determined's top-level names work here, so a script ported with ``import stalwart as det`` runs
as written::

    import logging

    import stalwart as det

    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    info = det.get_cluster_info()  # None off-cluster
    with det.core.init() as core_context:
        ...

Everything but ``LOG_FORMAT`` is imported on first use (PEP 562), so ``import stalwart`` costs
almost nothing: the CLI and each trial process pay only for what they touch.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing alone would double this module's import time.
TYPE_CHECKING = False
__version__ = "0.1.0"

#: Determined's recommended ``logging.basicConfig`` format, with the time added.
LOG_FORMAT = "%(asctime)s %(levelname)s: [%(process)s] %(name)s: %(message)s"

# name -> (module, attribute in it; None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "core": ("stalwart.core", None),
    "pytorch": ("stalwart.pytorch", None),
    "get_cluster_info": ("stalwart.core._info", "get_cluster_info"),
    "ClusterInfo": ("stalwart.core._info", "ClusterInfo"),
    "TrialInfo": ("stalwart.core._info", "TrialInfo"),
    "InvalidHP": ("stalwart.core._errors", "InvalidHP"),
}

if TYPE_CHECKING:
    from typing import Any

    from stalwart import core, pytorch
    from stalwart.core._errors import InvalidHP
    from stalwart.core._info import ClusterInfo, TrialInfo, get_cluster_info

__all__ = [
    "LOG_FORMAT",
    "ClusterInfo",
    "InvalidHP",
    "TrialInfo",
    "__version__",
    "core",
    "get_cluster_info",
    "pytorch",
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'stalwart' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # the next access is a plain attribute read
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
