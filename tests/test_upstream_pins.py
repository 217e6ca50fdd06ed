"""The behaviour of other libraries that this package relies on through private names.

Each test names what changed when it fails: a new SQLAlchemy, asyncpg, asyncmy,
advanced-alchemy or Python release broke an assumption, and the code named in the
message must follow it. The behavioural tests elsewhere (event loops, overflow,
draining, lost commits) show the consequences; these say where to look.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool
from sqlalchemy.util import queue as sqla_queue

from litestar_bento_db import DatabaseConfig, LoopBoundPool, create_async_engine_from_config
from litestar_bento_db.drivers import driver_of_connection
from litestar_bento_db.drivers.base import ProtocolDriver
from litestar_bento_db.pool import connection_loop


def _creator() -> Any:
    raise AssertionError("no connection is opened in these tests")


def test_queuepool_keeps_the_state_loopboundpool_reads() -> None:
    pool = AsyncAdaptedQueuePool(_creator, pool_size=2, max_overflow=3, use_lifo=True)
    where = "litestar_bento_db/pool.py (LoopBoundPool)"
    for method in ("qsize", "get", "put"):
        assert callable(getattr(pool._pool, method, None)), f"QueuePool._pool: see {where}"
    assert (pool._pool.maxsize, pool._pool.use_lifo) == (2, True), f"QueuePool._pool: {where}"
    assert pool._max_overflow == 3, f"QueuePool._max_overflow changed: see {where}"
    assert pool._overflow == -2, f"QueuePool._overflow no longer starts at -pool_size: {where}"
    pool._inc_overflow()
    pool._dec_overflow()
    assert pool._overflow == -2, f"QueuePool._dec_overflow changed: see {where}"
    assert pool._queue_class is sqla_queue.AsyncAdaptedQueue, f"_queue_class changed: {where}"
    for hook in ("_do_get", "_do_return_conn", "_close_connection"):
        assert hook in vars(QueuePool) or hook in vars(QueuePool.__mro__[1]), (
            f"SQLAlchemy's pool no longer has {hook}(): LoopBoundPool overrides it ({where})"
        )


def _recreate_arguments(cls: type) -> set[str]:
    source = inspect.getsource(cls.recreate)  # type: ignore[attr-defined]
    return set(re.findall(r"\b(\w+)=", source))


def test_loopboundpool_recreate_passes_every_argument_queuepool_does() -> None:
    missing = _recreate_arguments(QueuePool) - _recreate_arguments(LoopBoundPool)
    assert not missing, (
        f"QueuePool.recreate() now passes {sorted(missing)}: LoopBoundPool.recreate() "
        "(litestar_bento_db/pool.py) must pass them too, or dispose() loses the setting"
    )


async def test_invalidating_a_record_closes_through_the_pools_close_connection() -> None:
    """The other-loop discard relies on it: record.invalidate() -> Pool._close_connection()."""
    from tests.conftest import require_server

    engine = create_async_engine_from_config(DatabaseConfig(url=require_server("postgresql")))
    closed: list[bool] = []
    pool: Any = engine.pool
    original = pool._close_connection

    def spy(connection: Any, *, terminate: bool = False) -> None:
        closed.append(terminate)
        original(connection, terminate=terminate)

    pool._close_connection = spy
    try:
        async with engine.connect() as connection:
            fairy: Any = await connection.get_raw_connection()
            fairy._connection_record.invalidate(RuntimeError("pin"))
        assert closed == [True], (
            "ConnectionPoolEntry.invalidate() no longer closes through Pool._close_connection: "
            "LoopBoundPool's other-loop discard (litestar_bento_db/pool.py) must close it itself"
        )
    finally:
        await engine.dispose()


def test_what_the_first_statement_replay_reads_of_sqlalchemy() -> None:
    from sqlalchemy.engine.default import DefaultDialect, DefaultExecutionContext

    where = "litestar_bento_db/liveness.py (_replayable, _replay_on_fresh_connection)"
    assert isinstance(DefaultDialect.connection_characteristics, dict), (
        f"DefaultDialect.connection_characteristics changed: {where}"
    )
    assert callable(getattr(DefaultExecutionContext, "create_cursor", None)), (
        f"ExecutionContext.create_cursor() is gone: {where}"
    )


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_driver_connections_expose_their_loop_and_transport(
    kind: str, request: pytest.FixtureRequest
) -> None:
    from tests.conftest import require_server

    engine = create_async_engine_from_config(DatabaseConfig(url=require_server(kind)))
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            raw = await connection.get_raw_connection()
            dbapi = raw.dbapi_connection
            driver = dbapi.driver_connection  # type: ignore[union-attr]
            adapter = driver_of_connection(dbapi)
            where = f"litestar_bento_db/drivers/{adapter.name}.py"
            assert connection_loop(dbapi) is asyncio.get_running_loop(), (
                f"{type(driver).__module__}: the connection no longer tells its event loop "
                f"(asyncmy 'loop', asyncpg '_loop', psycopg: async_creator_fn): see {where}"
            )
            if not isinstance(adapter, ProtocolDriver):  # psycopg: libpq's own socket
                assert callable(driver.pgconn.finish), where
                assert driver.pgconn.socket >= 0, where
                return
            transport = getattr(driver, "_transport", None)
            assert isinstance(transport, asyncio.Transport), (
                f"{type(driver).__module__}: no '_transport' any more: abandon() in {where} "
                "cannot close the socket of a connection whose loop is closed"
            )
            assert callable(getattr(transport, "_call_connection_lost", None)), (
                "asyncio transports lost _call_connection_lost(): see ProtocolDriver.abandon() "
                "in litestar_bento_db/drivers/base.py"
            )
            assert callable(getattr(driver, "terminate", None) or driver.close), (
                "the driver connection can no longer be closed without awaiting"
            )
    finally:
        await engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_connection_of_a_closed_loop_gets_its_socket_closed(kind: str) -> None:
    from tests.conftest import require_server

    engine = create_async_engine_from_config(
        DatabaseConfig(url=require_server(kind), pool_size=1, max_overflow=0)
    )
    held: dict[str, Any] = {}

    async def first() -> None:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            held["driver"] = raw.dbapi_connection.driver_connection  # type: ignore[union-attr]

    async def second() -> None:
        async with engine.connect() as connection:  # the pooled one belongs to a closed loop
            await connection.execute(text("SELECT 1"))
        await engine.dispose()

    asyncio.run(first())
    asyncio.run(second())
    driver = held["driver"]
    transport = getattr(driver, "_transport", None)
    if transport is None:  # psycopg: PQfinish closed libpq's socket
        assert driver.closed
        return
    assert transport.is_closing()
    assert transport.get_extra_info("socket").fileno() == -1, (
        "the socket of a connection whose loop was closed stayed open: asyncio's "
        "transport._call_connection_lost() no longer closes it (see ProtocolDriver.abandon() "
        "in litestar_bento_db/drivers/base.py)"
    )


async def test_commits_go_through_the_dialects_do_commit(engine: Any) -> None:
    dialect = engine.sync_engine.dialect
    calls: list[object] = []
    wrapped = dialect.do_commit

    def spy(dbapi_connection: object) -> None:
        calls.append(dbapi_connection)
        wrapped(dbapi_connection)

    dialect.do_commit = spy
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        dialect.do_commit = wrapped
    assert len(calls) == 1, (
        "SQLAlchemy no longer commits through dialect.do_commit(): install() "
        "(litestar_bento_db/instrumentation.py) cannot mark errors raised during COMMIT"
    )


def test_advanced_alchemy_reads_the_listener_switches_from_session_info() -> None:
    from advanced_alchemy import _listeners

    source = inspect.getsource(_listeners)
    for key in ("enable_cache_listener", "enable_file_object_listener"):
        assert key in source, (
            f"advanced-alchemy no longer reads session.info[{key!r}]: the switches set in "
            "litestar/plugin.py no longer spare it Engine.execution_options() on each "
            "commit (tests/test_plugin.py::test_commit_builds_no_engine measures it)"
        )


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_what_the_first_statement_replay_and_the_closed_check_use(kind: str) -> None:
    from tests.conftest import require_server

    engine = create_async_engine_from_config(DatabaseConfig(url=require_server(kind)))
    where = "litestar_bento_db/liveness.py"
    try:
        async with engine.connect() as connection:
            fairy: Any = await connection.get_raw_connection()
            record = getattr(fairy, "_connection_record", None)
            assert record is not None, f"_ConnectionFairy._connection_record is gone: {where}"
            assert callable(getattr(record, "get_connection", None)), (
                f"_ConnectionRecord.get_connection() is gone: {where} cannot replay"
            )
            assert record.get_connection() is fairy.dbapi_connection
            fairy.dbapi_connection = fairy.dbapi_connection  # still assignable
            driver = fairy.dbapi_connection.driver_connection
            if kind == "mysql":
                assert callable(getattr(driver._transport, "is_closing", None)), (
                    "asyncmy's transport can no longer tell it is closed: "
                    "litestar_bento_db/drivers/asyncmy.py"
                )
    finally:
        await engine.dispose()


async def test_how_drivers_report_a_server_without_tls() -> None:
    """Asyncpg says it only in a plain ``ConnectionError``; asyncmy starts TLS regardless
    and OpenSSL reads the plain answer as WRONG_VERSION_NUMBER. Both read by their adapters
    (litestar_bento_db/drivers/asyncpg.py and asyncmy.py ``tls_failure``)."""
    import ssl

    import asyncmy
    import asyncpg

    from tests.conftest import require_server

    require_server("postgresql")
    require_server("mysql")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with pytest.raises(ConnectionError) as refused:
        await asyncpg.connect(host="127.0.0.1", user="postgres", database="test", ssl=context)
    assert type(refused.value) is ConnectionError, "asyncpg: see drivers/asyncpg.py tls_failure"
    assert "rejected SSL upgrade" in str(refused.value), "asyncpg: see drivers/asyncpg.py"
    with pytest.raises(asyncmy.errors.OperationalError) as plain:
        await asyncmy.connect(host="127.0.0.1", user="root", db="test", ssl=context)
    cause = plain.value.__cause__
    assert isinstance(cause, ssl.SSLError), "asyncmy: see drivers/asyncmy.py tls_failure"
    assert cause.reason == "WRONG_VERSION_NUMBER", "asyncmy: see drivers/asyncmy.py tls_failure"


def test_sqlalchemy_await_only_runs_a_coroutine_inside_its_greenlet() -> None:
    """An async ``password_provider`` is awaited in the ``do_connect`` event with
    ``sqlalchemy.util.await_only`` (litestar_bento_db/credentials.py)."""
    from sqlalchemy.util import await_only, greenlet_spawn

    async def answer() -> str:
        await asyncio.sleep(0)
        return "ok"

    assert asyncio.run(greenlet_spawn(lambda: await_only(answer()))) == "ok"


def test_advanced_alchemys_before_send_handlers_are_recognised() -> None:
    """``DatabasePlugin(alchemy_config)`` reads the app's handler choice from the handler
    advanced-alchemy made (its maker's name and closure: litestar/adopt.py)."""
    from advanced_alchemy.extensions.litestar.plugins.init.config.asyncio import (
        autocommit_handler_maker,
        default_handler_maker,
    )

    from litestar_bento_db.litestar.adopt import _commit_statuses

    changed = (
        "advanced-alchemy's before-send handler makers changed (their names or the "
        "commit_range / extra_*_statuses closure variables): litestar/adopt.py "
        "_commit_statuses reads them"
    )
    assert _commit_statuses(default_handler_maker()) == frozenset(), changed
    assert _commit_statuses(autocommit_handler_maker()) == frozenset(range(200, 300)), changed
    made = autocommit_handler_maker(
        commit_on_redirect=True, extra_commit_statuses={418}, extra_rollback_statuses={201}
    )
    assert _commit_statuses(made) == (frozenset(range(200, 400)) | {418}) - {201}, changed
