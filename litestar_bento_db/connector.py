"""Opening a connection: a fresh password, TLS failures told apart, one more try.

:class:`Connector` is SQLAlchemy's ``do_connect`` event (the documented place for
per-connection credentials) on every engine built here
(:mod:`litestar_bento_db.instrumentation`, step 1). For each new connection it:

1. puts the password of the moment in the connect arguments, when the config reads it
   from a file or a provider (:class:`~litestar_bento_db.credentials.PasswordSource`);
2. opens the connection through the dialect (``Dialect.connect``);
3. on failure, asks the driver's adapter whether TLS failed (``Driver.tls_failure``):
   such an error is marked (PERMANENT, never retried; its reason is what readiness and
   the CLI report); under ``prefer``, a server without TLS is connected to again
   without it (asyncmy cannot fall back by itself);
4. a password the server refused is read again and tried once more: a rotation may
   have happened since the last read. The server and the file (or token) change one
   after the other, so it waits up to :data:`ROTATION_WAIT` seconds for a different
   password before that one more try (the server may be the one behind, then).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from litestar_bento_db.credentials import PasswordSource
from litestar_bento_db.resilience.classification import code_entry, mark_tls_failure, reported
from litestar_bento_db.tls import NO_TLS, TlsSettings

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.pool import ConnectionPoolEntry

    from litestar_bento_db.engines.base import DialectSettings

__all__ = ["Connector"]

logger = logging.getLogger(__name__)

#: seconds a refused password is waited on to change (at most ``connect_timeout``)
ROTATION_WAIT = 1.0


class Connector:
    """SQLAlchemy's ``do_connect`` for one engine (see the module)."""

    def __init__(self, settings: DialectSettings) -> None:
        self.driver = settings.driver
        self.tls = settings.config.tls
        self.password = PasswordSource.of(settings.config)
        self.rotation_wait = min(ROTATION_WAIT, settings.config.connect_timeout)

    @property
    def needed(self) -> bool:
        """Whether there is anything to do: a password source or TLS asked for."""
        return self.password is not None or (self.tls is not None and self.tls.encrypts)

    def do_connect(
        self, dialect: Dialect, _record: ConnectionPoolEntry, cargs: Any, cparams: dict[str, Any]
    ) -> Any:
        """Open the connection (the event's return value is the DBAPI connection)."""
        if self.password is not None:
            cparams["password"] = self.password.read()
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as error:
            again = self._again(error, cparams)
            if again is None:
                raise
        return dialect.connect(*cargs, **again)

    def _again(self, error: BaseException, cparams: dict[str, Any]) -> dict[str, Any] | None:
        """The arguments of a second attempt, or None (``error`` stands, marked if TLS)."""
        reason = self.driver.tls_failure(error)
        if reason is not None:
            if reason == NO_TLS and self.tls is not None and self.tls.mode == "prefer":
                asked = self.driver.tls_args(self.tls)
                plain = {key: value for key, value in cparams.items() if key not in asked}
                return {**plain, **self.driver.tls_args(TlsSettings("disable"))}
            mark_tls_failure(error, reason)
            return None
        report = reported(error)
        entry = code_entry(report) if report is not None else None
        if self.password is None or entry is None or not entry.bad_password:
            return None
        logger.info("the server refused the password; trying once more with a fresh one")
        fresh = self.password.read_changed(str(cparams.get("password")), self.rotation_wait)
        return {**cparams, "password": fresh}

    def __repr__(self) -> str:
        return f"Connector({self.driver.name}, tls={self.tls}, password={self.password})"
