"""Read replicas (PostgreSQL hot standbys): health and lag watching, read routing.

Framework-free. A :class:`ReplicaSet` holds one engine per replica (the primary's
tuning, its own pool); a :class:`ReplicaWatcher` checks them every
``replica_check_interval`` and keeps in rotation those reachable, in recovery and at
most ``max_replica_lag`` seconds behind; :func:`route_reads` makes a session factory's
sessions read from a replica in rotation until they write (see
:mod:`litestar_bento_db.replicas.routing` for what decides "read").

Usage, from the event loop that serves::

    replicas = ReplicaSet(config)
    watcher = ReplicaWatcher(replicas)
    await watcher.check(engine)  # once before serving: replicas enter rotation
    route_reads(session_maker, replicas)
    task = asyncio.create_task(watcher.run(engine, stop))
    ...
    stop.set(); await task; await replicas.dispose()
"""

from __future__ import annotations

from litestar_bento_db.replicas.replica_set import Replica, ReplicaSet, ReplicaState
from litestar_bento_db.replicas.routing import (
    ReplicaRouting,
    is_read,
    primary_only,
    route_reads,
    stick_to_primary,
)
from litestar_bento_db.replicas.watcher import ReplicaWatcher, parse_lsn

__all__ = [
    "Replica",
    "ReplicaRouting",
    "ReplicaSet",
    "ReplicaState",
    "ReplicaWatcher",
    "is_read",
    "parse_lsn",
    "primary_only",
    "route_reads",
    "stick_to_primary",
]
