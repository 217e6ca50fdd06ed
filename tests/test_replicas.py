"""Read replicas against the real hot standby of the PostgreSQL server.

The replica (127.0.0.1:5433, ``TEST_REPLICA_URL``) streams from the primary
(scripts/ensure-replica.sh). Tests that pause its replay resume it, and tests that stop
it start it again, whatever happens; they hold a lock that keeps the other tests of this
file, in any process, from running meanwhile. Figures (how fast a replica leaves and returns)
are logged at INFO: ``pytest tests/test_replicas.py --log-cli-level=INFO``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from advanced_alchemy.config import SQLAlchemyAsyncConfig
from litestar import Litestar, get, post
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from sqlalchemy import (
    Engine,
    String,
    create_engine,
    event,
    func,
    insert,
    lambda_stmt,
    select,
    text,
    union,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from litestar_bento_db import (
    ConfigError,
    DatabaseConfig,
    DatabasePlugin,
    DbSession,
    DbSessionFactory,
    HealthConfig,
    create_async_engine_from_config,
)
from litestar_bento_db.replicas import (
    ReplicaRouting,
    ReplicaSet,
    ReplicaWatcher,
    is_read,
    parse_lsn,
    route_reads,
    stick_to_primary,
)
from tests.conftest import PG_DRIVER, PG_SCHEME, SECRET, require_replica, require_server
from tests.proxy import free_port

logger = logging.getLogger(__name__)

ENSURE_REPLICA = Path(__file__).resolve().parent.parent / "scripts" / "ensure-replica.sh"
REPLICA_LOGGER = "litestar_bento_db.replicas"
IN_RECOVERY = select(func.pg_is_in_recovery())
MAX_LAG = 1.0
LOCK = Path(tempfile.gettempdir()) / "bento-replica-tests.lock"

F = TypeVar("F", bound=Callable[..., Any])


def disrupts_replica(test: F) -> F:
    """Mark a test that pauses or stops the replica: it runs alone (see ``replica_lock``)."""
    test.disrupts_replica = True  # type: ignore[attr-defined]
    return test


@pytest.fixture(autouse=True)
def replica_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """A shared lock for each test, exclusive for one that disrupts the replica."""
    exclusive = getattr(request.function, "disrupts_replica", False)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with LOCK.open("a") as handle:
        deadline = time.monotonic() + 300
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{LOCK} held by another test run for 300 s")
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bento_replica_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    note: Mapped[str] = mapped_column(String(64))


@dataclass
class Stack:
    """A primary engine, its replica set and watcher, and a routed session factory."""

    primary: AsyncEngine
    replicas: ReplicaSet
    watcher: ReplicaWatcher
    maker: async_sessionmaker[AsyncSession]


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until ``condition()`` holds; return the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def replica_config(*replica_urls: str, **overrides: Any) -> DatabaseConfig:
    settings: dict[str, Any] = {
        "pool_size": 2,
        "max_overflow": 6,
        "max_replica_lag": MAX_LAG,
        "replica_check_interval": 0.1,
        "application_name": "bento-replica-tests",
        **overrides,
    }
    return DatabaseConfig(
        url=require_server("postgresql"),
        read_replica_urls=replica_urls or (require_replica(),),
        **settings,
    )


@contextlib.asynccontextmanager
async def stack(*replica_urls: str, wait: bool = True, **overrides: Any) -> AsyncIterator[Stack]:
    """Engines for the primary and the replica; with ``wait``, the replica in rotation."""
    config = replica_config(*replica_urls, **overrides)
    primary = create_async_engine_from_config(config)
    replicas = ReplicaSet(config)
    try:
        async with primary.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        watcher = ReplicaWatcher(replicas)
        await watcher.check(primary)
        if wait:
            deadline = time.monotonic() + 10
            while not replicas.healthy and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                await watcher.check(primary)
            assert replicas.healthy, replicas.status()
        maker = async_sessionmaker(primary, expire_on_commit=False)
        route_reads(maker, replicas)
        yield Stack(primary, replicas, watcher, maker)
    finally:
        await replicas.dispose()
        await primary.dispose()


@contextlib.asynccontextmanager
async def watching(s: Stack) -> AsyncIterator[None]:
    """The watcher running in the background."""
    stop = asyncio.Event()
    task = asyncio.create_task(s.watcher.run(s.primary, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class Statements:
    """The statements each engine ran: ``[("primary" | "replica", sql), ...]``."""

    def __init__(self, s: Stack) -> None:
        self.log: list[tuple[str, str]] = []
        replica_engine = s.replicas.replicas[0].sync_engine
        assert replica_engine is not None
        for name, engine in (("primary", s.primary.sync_engine), ("replica", replica_engine)):
            event.listen(engine, "before_cursor_execute", self._listener(name))

    def _listener(self, name: str) -> Callable[..., None]:
        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "pg_current_wal" not in statement and "pg_last_wal" not in statement:
                self.log.append((name, " ".join(statement.split())))

        return record

    def where(self, fragment: str) -> list[str]:
        """The engines that ran statements containing ``fragment``, in order."""
        return [name for name, sql in self.log if fragment in sql]


async def on_replica(sql: str) -> Any:
    """Run one statement on the replica directly (not through routing)."""
    engine = create_async_engine_from_config(DatabaseConfig(url=require_replica(), pool_size=1))
    try:
        async with engine.connect() as connection:
            value = await connection.scalar(text(sql))
            await connection.commit()
            return value
    finally:
        await engine.dispose()


def replica_cluster() -> list[str]:
    """``pg_ctlcluster`` arguments naming the replica cluster (``<version> replica``)."""
    if shutil.which("pg_lsclusters") is None:
        pytest.skip("pg_lsclusters not installed: cannot stop the replica")
    listing = subprocess.run(
        ["pg_lsclusters", "-h"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1] == "replica" and fields[2] == "5433":
            return [fields[0], "replica"]
    pytest.fail("no cluster 'replica' on port 5433 (scripts/ensure-replica.sh)")


def control_replica(action: str) -> None:
    """Stop (fast) or start the replica cluster, waiting until done."""
    options = ["-m", "fast"] if action == "stop" else []
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *replica_cluster(), action, *options],
        capture_output=True,
        check=True,
        timeout=120,
    )


def ensure_replica() -> None:
    """Make sure the replica runs, streams and replays (the project's script)."""
    result = subprocess.run(
        ["bash", str(ENSURE_REPLICA)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr


async def write_until(primary: AsyncEngine, stop: asyncio.Event) -> int:
    """Insert a row every 20 ms on the primary until ``stop``; return how many."""
    written = 0
    while not stop.is_set():
        async with primary.begin() as connection:
            await connection.execute(insert(Item).values(note="lag"))
        written += 1
        await asyncio.sleep(0.02)
    return written


def transitions(caplog: pytest.LogCaptureFixture, name: str) -> list[tuple[str, str]]:
    """The rotation changes logged for the replica ``name``: ``[(level, message)]``."""
    return [
        (record.levelname, record.getMessage())
        for record in caplog.records
        if record.name.startswith(REPLICA_LOGGER) and name in record.getMessage()
    ]


# ---- without a server -----------------------------------------------------------------


def test_what_decides_read() -> None:
    assert is_read(select(Item))
    assert is_read(union(select(Item.id), select(Item.id)))
    assert not is_read(select(Item).with_for_update())
    assert not is_read(select(Item).with_for_update(read=True))
    assert not is_read(text("SELECT 1"))
    assert not is_read(text("SELECT 1").columns())
    assert not is_read(insert(Item).values(note="x"))
    assert not is_read(None)
    assert is_read(lambda_stmt(lambda: select(Item)))
    assert not is_read(lambda_stmt(lambda: select(Item).with_for_update()))


def test_private_names_routing_relies_on() -> None:
    # SQLAlchemy's: Select._for_update_arg (is_read), Session._flushing (get_bind),
    # SessionTransaction._connections (letting go of a broken replica connection)
    assert select(Item)._for_update_arg is None
    assert select(Item).with_for_update()._for_update_arg is not None
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    seen: list[bool] = []
    with Session(engine) as session:
        assert session._flushing is False
        event.listen(session, "before_flush", lambda s, *_: seen.append(s._flushing))
        session.add(Item(note="x"))
        session.flush()
        assert session._flushing is False
        transaction = session.get_transaction()
        assert transaction is not None
        connection = session.connection()
        assert transaction._connections[engine][0] is connection
        assert transaction._connections[connection][0] is connection
    assert seen == [True]
    engine.dispose()


def test_lsn_parsing() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert parse_lsn("1/0") > parse_lsn("0/FFFFFFFF")  # type: ignore[operator]
    assert parse_lsn(None) is None


def test_replica_set_refuses_what_it_cannot_watch() -> None:
    with pytest.raises(ConfigError, match="no replica"):
        ReplicaSet(DatabaseConfig(url="postgresql://app@db/app"))
    with pytest.raises(ConfigError, match="PostgreSQL"):
        ReplicaSet(
            DatabaseConfig(url="mysql://app@db/app", read_replica_urls=("mysql://app@db2/app",))
        )


# ---- against the replica --------------------------------------------------------------


async def test_reads_go_to_the_replica_and_a_session_reads_its_own_writes() -> None:
    async with stack() as s:
        statements = Statements(s)
        note = uuid.uuid4().hex
        async with s.maker() as session:
            assert await session.scalar(IN_RECOVERY) is True  # on the replica
            assert (await session.execute(IN_RECOVERY)).scalar() is True
            session.add(Item(note=note))
            # autoflush runs before the query picks its engine: the read goes to the primary
            found = await session.scalar(select(Item.id).where(Item.note == note))
            assert found is not None
            assert await session.scalar(IN_RECOVERY) is False  # stays on the primary
            assert await session.get(Item, found) is not None
            await session.commit()
            assert await session.scalar(IN_RECOVERY) is False  # after commit too
        async with s.maker() as session:  # a new session reads from the replica again
            assert await session.scalar(IN_RECOVERY) is True
        assert statements.where("INSERT INTO bento_replica_items") == ["primary"]
        assert statements.where("WHERE bento_replica_items.note") == ["primary"]
        assert statements.where("pg_is_in_recovery") == [
            "replica", "replica", "primary", "primary", "replica"
        ]  # fmt: skip


async def test_for_update_text_connection_and_refused_writes_go_to_the_primary() -> None:
    async with stack() as s:
        statements = Statements(s)
        async with s.maker() as session:
            stmt = select(Item.id).limit(1).with_for_update()
            await session.execute(stmt)
            assert await session.scalar(IN_RECOVERY) is False
        async with s.maker() as session:
            assert await session.scalar(text("SELECT pg_is_in_recovery()")) is False
            assert await session.scalar(IN_RECOVERY) is False
        async with s.maker() as session:
            await session.connection()
            assert await session.scalar(IN_RECOVERY) is False
        async with s.maker() as session:
            stick_to_primary(session)
            assert await session.scalar(IN_RECOVERY) is False
        async with s.maker() as session:
            # a server-side cursor needs a transaction: on the primary, for that read only
            assert await (await session.stream_scalars(IN_RECOVERY)).all() == [False]
            assert await session.scalar(IN_RECOVERY) is True
        async with s.maker() as session:
            assert await session.scalar(IN_RECOVERY) is True
            async with session.begin_nested():  # a SAVEPOINT: on the primary
                assert await session.scalar(IN_RECOVERY) is False
            assert await session.scalar(IN_RECOVERY) is False
        async with s.maker() as session:
            assert await session.scalar(IN_RECOVERY) is True
            # a SELECT that writes: the standby refuses it (25006), it runs on the primary
            assert isinstance(await session.scalar(select(func.txid_current())), int)
            assert await session.scalar(IN_RECOVERY) is False
        assert statements.where("FOR UPDATE") == ["primary"]
        assert statements.where("txid_current") == ["replica", "primary"]
        assert s.replicas.healthy  # a refused write does not take the replica out


async def test_route_reads_keeps_the_makers_session_class_and_listeners() -> None:
    async with stack() as s:
        flushed: list[Session] = []
        sync_maker = sessionmaker()
        event.listen(sync_maker, "before_flush", lambda session, *_: flushed.append(session))
        maker = async_sessionmaker(s.primary, sync_session_class=sync_maker)
        routed = route_reads(maker, s.replicas)
        assert issubclass(routed, sync_maker.class_)
        assert issubclass(routed, ReplicaRouting)
        async with maker() as session:
            assert await session.scalar(IN_RECOVERY) is True
            session.add(Item(note="listener"))
            await session.flush()
            assert flushed == [session.sync_session]
            assert await session.scalar(IN_RECOVERY) is False
            await session.rollback()
        assert route_reads(maker, s.replicas).__mro__[1:3] == (ReplicaRouting, sync_maker.class_)

        # advanced-alchemy's session maker (with its listeners, from 1.12 on its own
        # sessionmaker) and the default one
        aa_maker = SQLAlchemyAsyncConfig(engine_instance=s.primary).create_session_maker()
        assert isinstance(aa_maker, async_sessionmaker)
        for maker in (aa_maker, async_sessionmaker(s.primary)):
            before = maker.kw.get("sync_session_class")
            routed = route_reads(maker, s.replicas)
            if isinstance(before, sessionmaker):  # advanced-alchemy 1.12 on
                assert issubclass(routed, before.class_)
            async with maker() as session:
                assert await session.scalar(IN_RECOVERY) is True
                session.add(Item(note="advanced-alchemy"))
                await session.flush()
                assert await session.scalar(IN_RECOVERY) is False
                await session.rollback()


async def test_a_multi_host_replica_url_reaches_the_standby() -> None:
    """The primary and the standby in one replica URL, ``target_session_attrs=standby``."""
    primary, standby = make_url(require_server("postgresql")), make_url(require_replica())
    hosts = f"{primary.host}:{primary.port},{standby.host}:{standby.port}"
    url = f"{PG_SCHEME}://postgres@{hosts}/test?target_session_attrs=standby"
    async with stack(url) as s:
        async with s.maker() as session:
            assert await session.scalar(IN_RECOVERY) is True  # served by the standby
        (replica,) = s.replicas.replicas
        assert replica.settings.config.metrics_pool_name == f"{hosts}/test"


async def test_status_round_robin_and_no_password() -> None:
    with_password = require_replica().replace("postgres@", f"postgres:{SECRET}@")
    down = f"{PG_SCHEME}://postgres:{SECRET}@127.0.0.1:9/test"  # nothing listens there
    async with stack(with_password, with_password, down, wait=False) as s:
        await until(lambda: s.watcher.rounds > 0, 1, "a round")
        up1, up2, _gone = s.replicas.replicas
        deadline = time.monotonic() + 10
        while not (up1.in_rotation and up2.in_rotation) and time.monotonic() < deadline:
            await s.watcher.check(s.primary)
        status = s.replicas.status()
        assert [entry["status"] for entry in status] == ["pass", "pass", "fail"]
        # asyncpg raises the OSError itself; psycopg reports libpq's refusal
        refused = "ConnectionRefusedError" if PG_DRIVER == "asyncpg" else "OperationalError"
        assert status[2]["error"] == refused
        assert status[2]["in_rotation"] is False
        assert SECRET not in repr(status)
        assert SECRET not in repr(s.replicas)
        assert not s.replicas.healthy
        picks = [s.replicas.pick() for _ in range(4)]
        assert picks == [up1.sync_engine, up2.sync_engine, up1.sync_engine, up2.sync_engine]
        assert s.watcher.last_round is not None
        assert s.watcher.last_round < s.watcher.timeout
        # sessions pin one replica each, alternating
        sessions = [s.maker() for _ in range(2)]
        for session in sessions:
            assert await session.scalar(IN_RECOVERY) is True
        assert {session.sync_session.get_bind(clause=IN_RECOVERY) for session in sessions} == {
            up1.sync_engine,
            up2.sync_engine,
        }
        for session in sessions:
            await session.close()


async def test_idle_primary_does_not_make_the_replica_look_lagging() -> None:
    # 1 s, not 0.5: the primary's own background WAL (checkpoints, autovacuum) reaches a
    # replica on a loaded 2-core CI machine up to about half a second later (0.54 s seen
    # once). Judging by the last commit alone would still fail: idle rounds are those
    # whose last commit is older than twice this
    max_lag = 1.0
    replica_engine = create_async_engine_from_config(
        DatabaseConfig(url=require_replica(), pool_size=1)
    )
    last_commit_age = text(
        "SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8"
    )
    try:
        async with stack(max_replica_lag=max_lag) as s, watching(s):
            replica = s.replicas.replicas[0]
            idle_rounds = 0
            deadline = time.monotonic() + 20
            while idle_rounds < 5:
                assert time.monotonic() < deadline, "the primary was never idle for long"
                rounds = s.watcher.rounds
                # the last commit the replica replayed: the primary's last commit
                async with replica_engine.connect() as connection:
                    age = await connection.scalar(last_commit_age)
                await until(lambda: s.watcher.rounds > rounds + 1, 5, "a round")  # noqa: B023
                assert replica.in_rotation, replica.state
                assert replica.state.lag is not None
                assert replica.state.lag <= max_lag
                if age is None or age > 2 * max_lag:
                    idle_rounds += 1  # no commit for twice the lag allowed
    finally:
        await replica_engine.dispose()


@disrupts_replica
async def test_paused_replay_takes_the_replica_out_and_resuming_brings_it_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=REPLICA_LOGGER)
    async with stack() as s, watching(s):
        replica = s.replicas.replicas[0]
        caplog.clear()
        stop_writing = asyncio.Event()
        writer = asyncio.create_task(write_until(s.primary, stop_writing))
        try:
            await asyncio.sleep(0.1)
            await on_replica("SELECT pg_wal_replay_pause()")
            left = await until(lambda: not replica.in_rotation, 10, "paused replica out")
            # it left because its lag passed the limit (about MAX_LAG after the pause, or
            # sooner if the primary's last commits were slow to come before it)
            assert replica.state.lag is not None
            assert replica.state.lag > MAX_LAG
            assert replica.state.reachable is True
            async with s.maker() as session:
                assert await session.scalar(IN_RECOVERY) is False
            status = s.replicas.status()[0]
            assert status["status"] == "warn"
            assert status["in_rotation"] is False
            # shown to the millisecond: a lag just past the limit shows as the limit
            assert status["lag"] >= MAX_LAG
            assert status["reason"].startswith("lag ")
        finally:
            try:
                await on_replica("SELECT pg_wal_replay_resume()")
            except Exception:
                await asyncio.to_thread(ensure_replica)
            stop_writing.set()
            written = await writer
        back = await until(lambda: replica.in_rotation, 10, "resumed replica in rotation")
        async with s.maker() as session:
            assert await session.scalar(IN_RECOVERY) is True
        logger.info(
            "paused replica out of rotation %.2f s after the pause (max lag %g s), back "
            "%.2f s after resume; %d rows written; watcher round %.1f ms",
            left, MAX_LAG, back, written, (s.watcher.last_round or 0) * 1000,
        )  # fmt: skip
    assert [level for level, _ in transitions(caplog, replica.name)] == ["WARNING", "INFO"]


@disrupts_replica
async def test_stopped_replica_fails_no_read_and_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=REPLICA_LOGGER)
    async with stack() as s, watching(s):
        replica = s.replicas.replicas[0]
        engine = replica.engine
        served: Counter[bool] = Counter()
        errors: list[str] = []
        stop_reading = asyncio.Event()

        async def reader() -> None:
            while not stop_reading.is_set():
                try:
                    async with s.maker() as session:
                        served[bool(await session.scalar(IN_RECOVERY))] += 1
                except Exception as error:
                    errors.append(repr(error))
                await asyncio.sleep(0.005)

        readers = [asyncio.create_task(reader()) for _ in range(4)]
        caplog.clear()
        try:
            await until(lambda: served[True] >= 20, 10, "reads on the replica")
            stopping = time.monotonic()
            await asyncio.to_thread(control_replica, "stop")
            stopped = time.monotonic() - stopping
            left = await until(lambda: not replica.in_rotation, 10, "stopped replica out")
            from_primary = served[False]
            await until(lambda: served[False] >= from_primary + 50, 10, "reads on the primary")
            assert s.replicas.status()[0]["status"] == "fail"
            starting = time.monotonic()
            await asyncio.to_thread(control_replica, "start")
            await until(lambda: replica.in_rotation, 30, "started replica in rotation")
            back = time.monotonic() - starting  # from the start command
            from_replica = served[True]
            await until(lambda: served[True] >= from_replica + 20, 10, "reads on the replica")
        finally:
            stop_reading.set()
            await asyncio.gather(*readers)
            await asyncio.to_thread(ensure_replica)
        assert errors == []
        assert replica.engine is engine  # nothing recreated
        logger.info(
            "replica stop took %.2f s, out of rotation %.2f s after it ended, back %.2f s "
            "after the start command; reads: %d replica, %d primary, 0 failed",
            stopped, left, back, served[True], served[False],
        )  # fmt: skip
    assert [level for level, _ in transitions(caplog, replica.name)] == ["WARNING", "INFO"]


@disrupts_replica
async def test_replica_dying_under_open_sessions() -> None:
    note = uuid.uuid4().hex
    async with stack() as s, stack() as fresh:
        replica = s.replicas.replicas[0]
        reader, writer = s.maker(), s.maker()
        try:
            assert await reader.scalar(IN_RECOVERY) is True  # holds a replica connection
            assert await writer.scalar(IN_RECOVERY) is True
            writer.add(Item(note=note))
            await writer.flush()  # and a primary one
            # no pooled connection in the other set: its next read connects afresh
            assert fresh.replicas.replicas[0].engine is not None
            await fresh.replicas.replicas[0].engine.dispose()
            await asyncio.to_thread(control_replica, "stop")

            # the replica connection is dead: the read runs again on the primary
            assert await reader.scalar(IN_RECOVERY) is False
            assert not replica.in_rotation
            assert replica.state.reachable is False
            await reader.commit()
            # the replica's part of the commit sends nothing: the primary's commits
            await writer.commit()
            async with s.primary.connect() as connection:
                count = await connection.scalar(
                    select(func.count()).select_from(Item).where(Item.note == note)
                )
            assert count == 1

            # a replica still in rotation that refuses connections: the primary answers
            assert fresh.replicas.replicas[0].in_rotation
            async with fresh.maker() as session:
                assert await session.scalar(IN_RECOVERY) is False
            assert not fresh.replicas.replicas[0].in_rotation
        finally:
            await reader.close()
            await writer.close()
            await asyncio.to_thread(ensure_replica)
        await s.watcher.check(s.primary)
        assert replica.in_rotation


def test_engines_are_per_replica() -> None:
    url = "postgresql://app@replica-a/app"
    config = DatabaseConfig(
        url="postgresql://app@primary/app",
        read_replica_urls=(url, "postgresql://app@replica-b/app"),
        pool_name="orders",
    )
    replicas = ReplicaSet(config)
    assert replicas.pick() is None  # no engine before create_engines, nothing in rotation
    replicas.create_engines()
    first, second = replicas.replicas
    assert first.engine is not None
    assert second.engine is not None
    assert first.engine.sync_engine.pool is not second.engine.sync_engine.pool
    assert first.settings.config.url.endswith("@replica-a/app")
    assert first.settings.config.read_replica_urls == ()
    assert first.settings.config.pool_name == "orders/replica1"
    assert first.sync_engine is not None
    assert isinstance(first.sync_engine, Engine)
    assert first.sync_engine.pool is first.engine.sync_engine.pool
    # the watcher's own engine: one connection, its own pool name
    assert first.check_engine is not None
    assert first.check_engine.sync_engine.pool is not first.engine.sync_engine.pool
    assert first.check_settings.config.pool_name == "orders/replica1/check"
    assert (first.check_settings.config.pool_size, first.check_settings.config.max_overflow) == (
        1,
        0,
    )
    assert replicas.pick() is None  # engines but no check yet
    asyncio.run(replicas.dispose())
    assert first.engine is None
    assert first.state.in_rotation is False
    unnamed = ReplicaSet(
        DatabaseConfig(url="postgresql://app@primary/app", read_replica_urls=(url,))
    )
    assert unnamed.replicas[0].settings.config.pool_name is None  # host:port/database
    assert unnamed.replicas[0].check_settings.config.pool_name == "replica-a:5432/app/check"


async def test_a_busy_read_pool_does_not_take_the_replica_out() -> None:
    async with stack(pool_size=1, max_overflow=0, pool_timeout=5) as s:
        replica = s.replicas.replicas[0]
        assert replica.read_engine is not None
        async with replica.read_engine.connect() as held:  # the whole read pool
            await held.scalar(IN_RECOVERY)
            started = time.monotonic()
            await s.watcher.check(s.primary)
            assert time.monotonic() - started < 1
            assert replica.in_rotation, replica.state


# ---- through the Litestar plugin --------------------------------------------------------


@get("/where")
async def where_get(db_session: DbSession) -> dict[str, bool]:
    return {"replica": bool(await db_session.scalar(IN_RECOVERY))}


@post("/where", status_code=200)
async def where_post(db_session: DbSession) -> dict[str, bool]:
    return {"replica": bool(await db_session.scalar(IN_RECOVERY))}


@get("/where/unit")
async def where_unit_get(db_session_factory: DbSessionFactory) -> dict[str, bool]:
    async with db_session_factory() as session:
        return {"replica": bool(await session.scalar(IN_RECOVERY))}


@post("/where/unit", status_code=200)
async def where_unit_post(db_session_factory: DbSessionFactory) -> dict[str, bool]:
    async with db_session_factory() as session:
        return {"replica": bool(await session.scalar(IN_RECOVERY))}


@post("/items/{note:str}", status_code=200)
async def add_item(db_session: DbSession, note: FromPath[str]) -> dict[str, int]:
    db_session.add(Item(note=note))
    count = await db_session.scalar(select(func.count()).where(Item.note == note))
    return {"count": int(count or 0)}


def _app(*replica_urls: str, **overrides: Any) -> tuple[Litestar, DatabasePlugin]:
    plugin = DatabasePlugin(
        replica_config(*replica_urls, **overrides), health=HealthConfig(details=True)
    )
    handlers = [where_get, where_post, where_unit_get, where_unit_post, add_item]
    return Litestar(handlers, plugins=[plugin]), plugin


async def _in_rotation(plugin: DatabasePlugin) -> None:
    replicas = plugin.runtime.replicas
    assert replicas is not None
    await until(lambda: replicas.healthy, 10, "the replica in rotation")


async def test_the_plugin_reads_from_the_replica_in_get_requests() -> None:
    engine = create_async_engine_from_config(replica_config())
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    await engine.dispose()
    app, plugin = _app()
    async with AsyncTestClient(app) as client:
        await _in_rotation(plugin)
        assert (await client.get("/where")).json() == {"replica": True}
        # any other method: the primary throughout (read-your-writes, no stale RMW)
        assert (await client.post("/where")).json() == {"replica": False}
        # units of work (DbSessionFactory) likewise
        assert (await client.get("/where/unit")).json() == {"replica": True}
        assert (await client.post("/where/unit")).json() == {"replica": False}
        assert (await client.post(f"/items/mine-{uuid.uuid4().hex[:8]}")).json() == {"count": 1}
        health = (await client.get("/health")).json()
        assert health["status"] == "pass"
        (replica,) = health["checks"]["database:replicas"]
        assert (replica["status"], replica["in_rotation"]) == ("pass", True)
    assert plugin.runtime.phase == "stopped"
    assert (
        await on_replica(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bento-replica-tests'"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        == 0
    )  # the replica's pools were drained and disposed at shutdown


async def test_an_unreachable_replica_is_a_warning_not_unreadiness() -> None:
    dead = f"{PG_SCHEME}://postgres:{SECRET}@127.0.0.1:{free_port()}/test"
    app, plugin = _app(require_replica(), dead)
    async with AsyncTestClient(app) as client:
        replicas = plugin.runtime.replicas
        assert replicas is not None
        await until(lambda: replicas.replicas[0].in_rotation, 10, "the live replica in rotation")
        assert (await client.get("/health/readiness")).status_code == 200
        health = await client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "warn"
        statuses = [r["status"] for r in health.json()["checks"]["database:replicas"]]
        assert statuses == ["pass", "fail"]
        assert SECRET not in health.text
        for _ in range(5):  # reads go to the live replica only
            assert (await client.get("/where")).json() == {"replica": True}


@disrupts_replica
async def test_the_plugin_serves_reads_while_the_replica_is_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, plugin = _app(replica_check_interval=0.2)
    failures: list[int] = []
    answered = {"replica": 0, "primary": 0}
    stop = asyncio.Event()

    async def reader(client: AsyncTestClient[Litestar]) -> None:
        while not stop.is_set():
            response = await client.get("/where")
            if response.status_code != 200:
                failures.append(response.status_code)
            else:
                answered["replica" if response.json()["replica"] else "primary"] += 1
            await asyncio.sleep(0.01)

    try:
        async with AsyncTestClient(app) as client:
            await _in_rotation(plugin)
            readers = [asyncio.ensure_future(reader(client)) for _ in range(4)]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(control_replica, "stop")
            replicas = plugin.runtime.replicas
            assert replicas is not None
            await until(lambda: not replicas.healthy, 10, "the stopped replica out")
            assert (await client.get("/health/readiness")).status_code == 200
            assert (await client.get("/health")).json()["status"] == "warn"
            await asyncio.to_thread(ensure_replica)
            await until(lambda: replicas.healthy, 30, "the replica back in rotation")
            assert (await client.get("/health")).json()["status"] == "pass"
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*readers)
    finally:
        await asyncio.to_thread(ensure_replica)
    assert failures == []
    assert answered["primary"] > 0
    assert answered["replica"] > 0


@disrupts_replica
async def test_the_plugin_shows_a_lagging_replica_and_takes_it_back() -> None:
    app, plugin = _app(replica_check_interval=0.2)
    try:
        async with AsyncTestClient(app) as client:
            await _in_rotation(plugin)
            replicas = plugin.runtime.replicas
            assert replicas is not None
            await on_replica("SELECT pg_wal_replay_pause()")
            try:
                for n in range(200):  # writes through the app, until the lag shows
                    await client.post(f"/items/lag{n}")
                    if not replicas.healthy:
                        break
                    await asyncio.sleep(0.02)
                await until(lambda: not replicas.healthy, 10, "the lagging replica out")
                health = (await client.get("/health")).json()
                assert health["status"] == "warn"
                (replica,) = health["checks"]["database:replicas"]
                assert replica["lag"] > MAX_LAG
                assert (await client.get("/where")).json() == {"replica": False}
            finally:
                await on_replica("SELECT pg_wal_replay_resume()")
            await until(lambda: replicas.healthy, 10, "the replica back after resume")
            assert (await client.get("/where")).json() == {"replica": True}
    finally:
        await on_replica("SELECT pg_wal_replay_resume()")
