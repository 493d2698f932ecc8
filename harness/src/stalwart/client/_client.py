"""``Client``: one typed method per route of the master's REST API (docs/api.md).

The methods live in one module per noun (``_experiments``, ``_trials`` ...); ``Client`` joins them.
"""

from __future__ import annotations

from stalwart.client._accounts import Accounts
from stalwart.client._cluster import Cluster
from stalwart.client._experiments import Experiments
from stalwart.client._registry import Registry
from stalwart.client._trials import Trials
from stalwart.client._workspaces import Workspaces

__all__ = ["Client"]


class Client(Accounts, Experiments, Trials, Registry, Workspaces, Cluster):
    """A connection to one master.

    ``master`` defaults to ``$STALWART_MASTER`` or http://127.0.0.1:8080; ``token`` to
    ``$STALWART_TOKEN`` or the token ``stalwart user login`` cached for that master. Calls that
    need a token raise ``NotLoggedIn`` when there is none. Use it as a context manager (or call
    ``close()``) to release pooled connections.

    Example::

        from stalwart.client import Client

        with Client("http://master:8080") as client:
            for exp in client.list_experiments(states=["ACTIVE"]).items:
                print(exp.id, exp.name)
    """
