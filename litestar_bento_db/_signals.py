"""Chain a signal handler in front of whatever handler was installed before."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

__all__ = ["ChainedSignalHandler"]


class ChainedSignalHandler:
    """On each signal, run ``callback(signum)``, then the handler that was there before.

    Args:
        signals: The signals to handle.
        callback: Called first, from the signal handler (keep it short).
        reraise_default: Where no handler was installed before, restore the default and
            raise the signal again, so the process does what it would have done.
    """

    def __init__(
        self,
        signals: Iterable[signal.Signals],
        callback: Callable[[int], None],
        *,
        reraise_default: bool,
    ) -> None:
        self.signals = tuple(signals)
        self.callback = callback
        self.reraise_default = reraise_default
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        """Install the handlers (from the main thread), remembering the previous ones."""
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Restore the previous handlers where ours is still the one installed."""
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.callback(signum)
        previous = self._previous.get(signal.Signals(signum))
        if callable(previous):
            previous(signum, frame)
        elif self.reraise_default and previous in (signal.SIG_DFL, None):
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
