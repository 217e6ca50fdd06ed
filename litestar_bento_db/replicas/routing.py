"""Read routing: a session's reads go to a healthy replica until it writes.

:class:`ReplicaRouting` overrides ``Session.get_bind`` (SQLAlchemy's documented way to
choose an engine per statement). What decides "read", statement by statement:

- A statement is a read when it is a SELECT (``select()``, ``union()`` and the like,
  also wrapped in ``lambda_stmt()``) without ``FOR UPDATE``/``FOR SHARE``
  (``with_for_update()``, ``get(..., with_for_update=...)``). ``session.get()``,
  ``refresh()`` and relationship loads issue such selects. ``text()``, even
  ``text("SELECT ...")`` and ``text(...).columns()``, and INSERT/UPDATE/DELETE are not
  reads.
- A session's first read picks a replica in rotation (round robin) and keeps it for its
  next reads; if that replica leaves rotation, the next read picks again. With none in
  rotation, reads go to the primary.
- Once the session has written (a flush, including autoflush before a query, a
  statement that is not a read, ``session.connection()``, ``begin_nested()``), or after
  :func:`stick_to_primary`, every statement of the session goes to the primary, for the
  rest of the session's life (read-your-writes).
- A read that a replica refuses as a write (SQLSTATE 25006, e.g. ``SELECT nextval()``
  or a data-modifying CTE) runs again on the primary, and the session sticks to it.
- A read that fails on a replica because it cannot be reached (a connection error, the
  server shutting down or refusing more connections) runs again on the primary; the
  replica leaves rotation until the watcher finds it healthy, and the session sticks to
  the primary. Statement timeouts are not retried (the watcher takes a stalled replica
  out within its check timeout).
- Streamed reads (``AsyncSession.stream()``, the ``stream_results`` and ``yield_per``
  execution options) run on the primary: asyncpg opens server-side cursors only inside
  a transaction, and replica connections have none. The session is not tied to the
  primary by them.

Reads before a session's first write may be up to ``max_replica_lag`` seconds old: a
value read to compute a write (read-modify-write) should come from the primary, with
``with_for_update()`` or :func:`stick_to_primary` (e.g. for every unsafe HTTP method).

Replica engines read in ``AUTOCOMMIT`` mode, so each read sees the replica's latest
replayed state, and a session's commit, which also ends its replica "transaction",
sends nothing to the replica.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Connection, Engine, TextualSelect, event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from litestar_bento_db.replicas.replica_set import Replica, ReplicaSet
from litestar_bento_db.resilience import DatabaseErrorClassifier, ErrorCategory
from litestar_bento_db.resilience.classification import code_entry, reported

__all__ = ["ReplicaRouting", "is_read", "primary_only", "route_reads", "stick_to_primary"]

T = TypeVar("T")

#: SQLSTATE of a write refused by a hot standby ("cannot execute ... in a read-only
#: transaction")
_READ_ONLY = "25006"


def is_read(clause: Any) -> bool:
    """True for a statement routing may send to a replica (see the module docs).

    A SELECT (``Select``, ``union()`` and the like, also inside ``lambda_stmt()``) without
    ``FOR UPDATE``/``FOR SHARE``, and not ``text()``.
    """
    # _for_update_arg: SQLAlchemy's (private) record of with_for_update(); it has no
    # public accessor (pinned by tests/test_replicas.py)
    return (
        getattr(clause, "is_select", False) is True
        and not isinstance(clause, TextualSelect)
        and getattr(clause, "_for_update_arg", None) is None
    )


class ReplicaRouting(Session):
    """A ``Session`` whose reads go to a replica of :attr:`replica_set` until it writes.

    Use it as a mixin before the session class in use; :func:`route_reads` builds such a
    class. The session's ``bind`` is the primary's (sync) engine; a session bound to a
    ``Connection`` is never routed.
    """

    replica_set: ClassVar[ReplicaSet | None] = None
    """The replicas reads go to; None routes nothing."""

    # per session, set on the instance when they change
    _replica: Replica | None = None  # the replica this session reads from
    _routed: Replica | None = None  # the replica the last get_bind returned
    _primary_only: bool = False  # wrote, or asked for the primary
    _streaming: bool = False  # a call with a server-side cursor is under way
    _replica_connections: dict[Engine, Connection] | None = None  # by replica engine

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: Any = None,
        bind: Any = None,
        **kw: Any,
    ) -> Engine | Connection:
        """The replica for a read (see the module docs), else the primary."""
        self._routed = None
        if not self._primary_only:
            # _flushing: set by Session.flush (private; SQLAlchemy's own get_bind example
            # reads it; pinned by tests/test_replicas.py)
            if self._flushing or (clause is not None and not is_read(clause)):
                self._primary_only = True
            elif clause is not None and bind is None and not self._streaming:
                replica = self._pick()
                if replica is not None and replica.sync_engine is not None:
                    self._routed = replica
                    return replica.sync_engine
        return super().get_bind(mapper, clause=clause, bind=bind, **kw)

    def _pick(self) -> Replica | None:
        replicas = self.replica_set
        if replicas is None or not isinstance(self.bind, Engine):
            return None
        replica = self._replica
        if replica is None or not replica.state.in_rotation:
            replica = self._replica = replicas.pick_replica()
        return replica

    def connection(self, *args: Any, **kwargs: Any) -> Connection:
        """The primary's connection in this session's transaction; the session sticks to it."""
        self._primary_only = True
        return super().connection(*args, **kwargs)

    def begin_nested(self) -> SessionTransaction:
        """A SAVEPOINT on the primary; the session sticks to it."""
        self._primary_only = True
        return super().begin_nested()

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """``Session.execute``; a read a replica cannot serve runs again on the primary."""
        return self._with_fallback(super().execute, args, kwargs)

    def scalar(self, *args: Any, **kwargs: Any) -> Any:
        """``Session.scalar``; a read a replica cannot serve runs again on the primary."""
        return self._with_fallback(super().scalar, args, kwargs)

    def scalars(self, *args: Any, **kwargs: Any) -> Any:
        """``Session.scalars``; a read a replica cannot serve runs again on the primary."""
        return self._with_fallback(super().scalars, args, kwargs)

    def _with_fallback(
        self, call: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        self._routed = None
        if not self._streaming and self._streams(args, kwargs):
            # asyncpg opens server-side cursors only inside a transaction, which replica
            # connections (AUTOCOMMIT) do not have: streamed reads run on the primary
            self._streaming = True
            try:
                return call(*args, **kwargs)
            finally:
                self._streaming = False
        try:
            return call(*args, **kwargs)
        except Exception as error:
            replica = self._routed
            if replica is None or not self._falls_back(replica, error):
                raise
        return call(*args, **kwargs)  # on the primary: _primary_only is set

    def _streams(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """The call asks for a server-side cursor (``stream_results``, ``yield_per``)."""
        statement = args[0] if args else kwargs.get("statement")
        statement_options = getattr(statement, "get_execution_options", None)
        for options in (
            kwargs.get("execution_options"),
            statement_options() if statement_options is not None else None,
            getattr(self, "execution_options", None),  # Session-wide, SQLAlchemy 2.1
        ):
            if options and (options.get("stream_results") or options.get("yield_per")):
                return True
        return False

    def _falls_back(self, replica: Replica, error: Exception) -> bool:
        report = reported(error)
        if report is not None and report.code == _READ_ONLY:
            self._primary_only = True
            return True
        entry = code_entry(report) if report is not None else None
        # a replica that cannot serve now (starting, stopping, full) or cannot be reached
        if (entry is not None and entry.unavailable) or DatabaseErrorClassifier.classify(error) is (
            ErrorCategory.CONNECTION
        ):
            self._primary_only = True
            replica_set = self.replica_set
            if replica_set is not None:
                replica_set.report_failure(replica, error)
            held = self._replica_connections
            connection = held.get(replica.sync_engine) if held and replica.sync_engine else None
            if connection is not None and connection.invalidated:
                self._let_go(connection)
            return True
        return False

    def _let_go(self, connection: Connection) -> None:
        """Remove a broken replica connection from this session's transaction.

        Its (empty: AUTOCOMMIT) transaction can neither commit nor reconnect, and it
        would fail the session's commit. Only reads ran on it: nothing is lost.
        """
        transaction = self.get_nested_transaction() or self.get_transaction()
        while transaction is not None:
            # SessionTransaction._connections (private; pinned by tests/test_replicas.py):
            # the only way to let go of one connection without rolling the session back
            transaction._connections.pop(connection, None)
            transaction._connections.pop(connection.engine, None)
            transaction = transaction.parent
        connection.close()


@event.listens_for(ReplicaRouting, "after_begin")
def _hold_replica_connection(
    session: Session, _transaction: SessionTransaction, connection: Connection
) -> None:
    # the session took a connection for the engine its get_bind just returned
    if isinstance(session, ReplicaRouting) and session._routed is not None:
        if session._replica_connections is None:
            session._replica_connections = {}
        session._replica_connections[connection.engine] = connection


def stick_to_primary(session: Session | AsyncSession) -> None:
    """Send every further statement of ``session`` to the primary (as after a write)."""
    sync_session = session.sync_session if isinstance(session, AsyncSession) else session
    if isinstance(sync_session, ReplicaRouting):
        sync_session._primary_only = True


class _PrimaryOnlyMaker(async_sessionmaker[Any]):
    """A session factory whose sessions use the primary only."""

    def __call__(self, **local_kw: Any) -> Any:
        session = super().__call__(**local_kw)
        stick_to_primary(session)
        return session


def primary_only(maker: async_sessionmaker[Any]) -> async_sessionmaker[Any]:
    """A copy of ``maker`` whose sessions send every statement to the primary."""
    return _PrimaryOnlyMaker(class_=maker.class_, **maker.kw)


def route_reads(maker: async_sessionmaker[Any], replicas: ReplicaSet) -> type[Session]:
    """Make the sessions of ``maker`` route their reads to ``replicas``.

    The maker's sync session class (``sync_session_class``: a class, or a
    ``sessionmaker`` carrying listeners, as advanced-alchemy configures) is subclassed
    with :class:`ReplicaRouting`, so its listeners still fire. Calling it again on the
    same maker replaces the replicas.

    Args:
        maker: The session factory bound to the primary's engine.
        replicas: The replicas reads go to.

    Returns:
        The routing sync session class now in use.
    """
    current = maker.kw.get("sync_session_class") or maker.class_.sync_session_class
    base_maker = current if isinstance(current, sessionmaker) else None
    base: type[Session] = base_maker.class_ if base_maker is not None else current
    # a maker routed before: route from the class it had then
    base = getattr(base, "_routing_base", base)
    routed = type(
        f"ReplicaRouting{base.__name__}",
        (ReplicaRouting, base),
        {"replica_set": replicas, "_routing_base": base},
    )
    if base_maker is not None:
        # keep the sessionmaker's own defaults; listeners live on its class, now a base
        maker.configure(sync_session_class=sessionmaker(class_=routed, **base_maker.kw))
    else:
        maker.configure(sync_session_class=routed)
    return routed
