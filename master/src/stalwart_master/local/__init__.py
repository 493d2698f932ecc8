"""A local Stalwart cluster on this machine: embedded PostgreSQL and Redis, master and worker.

``embedded`` starts the servers on their own (the test suite uses it when no system PostgreSQL or
Redis is reachable); ``cluster`` supervises the whole set for ``stalwart deploy local``.
"""

from stalwart_master.local.cluster import ClusterStatus, ComponentStatus, down, status, up
from stalwart_master.local.embedded import EmbeddedServer, start_postgres, start_redis, stop
from stalwart_master.local.process import LocalClusterError

__all__ = [
    "ClusterStatus",
    "ComponentStatus",
    "EmbeddedServer",
    "LocalClusterError",
    "down",
    "start_postgres",
    "start_redis",
    "status",
    "stop",
    "up",
]
