"""Passwords that rotate: read again for every new connection, never kept or shown.

A :class:`PasswordSource` reads ``password_file`` (a Docker or Kubernetes secret, a
Vault agent's file) or calls ``password_provider`` (a function or coroutine function:
an RDS IAM token, a Vault lease) each time :mod:`litestar_bento_db.connector` opens a
connection. The password itself is not stored anywhere.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.util import await_only

if TYPE_CHECKING:
    from litestar_bento_db.config import DatabaseConfig, PasswordProvider

__all__ = ["PasswordSource"]

#: seconds between two reads while waiting for a rotated password
_POLL: float = 0.05


class PasswordSource:
    """Where each new connection's password comes from.

    Args:
        file: A file holding the password (a trailing newline is not part of it).
        provider: A function or coroutine function returning it.
    """

    def __init__(self, file: str | None = None, provider: PasswordProvider | None = None) -> None:
        if (file is None) == (provider is None):
            raise ValueError("give either a password file or a password provider")
        self.file = file
        self.provider = provider

    @classmethod
    def of(cls, config: DatabaseConfig) -> PasswordSource | None:
        """The source ``config`` names (``password_file``, ``password_provider``), if any."""
        if config.password_file is None and config.password_provider is None:
            return None
        return cls(config.password_file, config.password_provider)

    def read(self) -> str:
        """The password now. Inside SQLAlchemy's connect (a coroutine is awaited there).

        Raises:
            OSError: The file cannot be read.
            TypeError: The provider returned something other than text.
        """
        if self.file is not None:
            return Path(self.file).read_text(encoding="utf-8").rstrip("\r\n")
        assert self.provider is not None
        value = self.provider()
        if inspect.isawaitable(value):
            value = await_only(value)
        if not isinstance(value, str):
            raise TypeError(
                f"password_provider returned {type(value).__name__}; expected the password as str"
            )
        return value

    def read_changed(self, refused: str, wait: float) -> str:
        """The password once it differs from ``refused``, waiting up to ``wait`` seconds.

        A rotation changes the server and the file (or the provider's answer) one after
        the other: the new one may be moments behind. An empty answer is waited past too
        (a file rewritten in place reads empty between its truncation and its write).
        After ``wait`` seconds, whatever the source says then (the server may be the one
        behind).
        """
        deadline = time.monotonic() + wait
        while True:
            password = self.read()
            if password not in (refused, "") or time.monotonic() >= deadline:
                return password
            await_only(asyncio.sleep(_POLL))

    def __repr__(self) -> str:
        what = f"file={self.file!r}" if self.file is not None else f"provider={self.provider!r}"
        return f"PasswordSource({what})"
