"""Process-wide counts the metrics export: retries, refusals, failed commits, discards.

Apart from :mod:`litestar_bento_db.metrics` so that the resilience and pool modules can
count without importing the exporters.
"""

from __future__ import annotations

import threading
from typing import Final

__all__ = ["COUNTERS", "Counters"]


class Counters:
    """Process-wide counts: retries, budget refusals, failed commits, discards, read-only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries: dict[str, int] = {}
        """Retries by error category."""
        self.budget_refusals = 0
        """Retries the shared retry budget refused."""
        self.commit_failures: dict[str, int] = {}
        """Failed COMMITs by error category (``ambiguous``: the outcome is unknown)."""
        self.discards: dict[str, int] = {}
        """Pooled connections discarded by reason (``other_loop``)."""
        self.read_only_refusals: dict[str, int] = {}
        """Writes a primary refused as read-only, by pool name."""
        self.primary_moves: dict[str, int] = {}
        """Times a primary turned out read-only (its pool replaced), by pool name."""

    def _bump(self, table: dict[str, int], key: str) -> None:
        with self._lock:
            table[key] = table.get(key, 0) + 1

    def retry(self, category: str) -> None:
        """A unit of work is run again after a ``category`` error."""
        self._bump(self.retries, category)

    def budget_refusal(self) -> None:
        """The retry budget refused a retry."""
        with self._lock:
            self.budget_refusals += 1

    def commit_failure(self, category: str) -> None:
        """A COMMIT failed with a ``category`` error."""
        self._bump(self.commit_failures, category)

    def discard(self, reason: str) -> None:
        """A pooled connection was discarded for ``reason``."""
        self._bump(self.discards, reason)

    def read_only_refusal(self, pool_name: str) -> None:
        """The primary ``pool_name`` refused a write as read-only."""
        self._bump(self.read_only_refusals, pool_name)

    def primary_move(self, pool_name: str) -> None:
        """The primary ``pool_name`` turned out read-only: its pool is replaced."""
        self._bump(self.primary_moves, pool_name)


COUNTERS: Final = Counters()
