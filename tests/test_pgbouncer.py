"""PostgreSQL behind a real PgBouncer in transaction pooling mode."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from litestar_bento_db._counters import COUNTERS
from litestar_bento_db.resilience import DatabaseErrorClassifier, ErrorCategory
from tests.conftest import PG_DRIVER, PG_SCHEME, SECRET, create_password_user, require_server
from tests.proxy import free_port

USER = "bento_bouncer"


def _pgbouncer() -> str:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.access(binary, os.X_OK):
        reason = "pgbouncer is not installed (scripts/ensure-services.sh installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="module")
def bouncer() -> Iterator[int]:
    """A PgBouncer (transaction pooling, 2 server connections, md5 auth) in front of test."""
    binary = _pgbouncer()
    server = make_url(require_server("postgresql"))
    asyncio.run(create_password_user("postgresql", USER))
    # not under pytest's temp dir: pgbouncer runs as 'postgres', which cannot enter it
    home = Path(tempfile.mkdtemp(prefix="bento-pgbouncer-"))
    port = free_port()
    (home / "userlist.txt").write_text(f'"{USER}" "{SECRET}"\n')
    (home / "pgbouncer.ini").write_text(
        f"""[databases]
test = host={server.host} port={server.port or 5432} dbname=test

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = md5
auth_file = {home / "userlist.txt"}
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
logfile = {home / "pgbouncer.log"}
pidfile = {home / "pgbouncer.pid"}
"""
    )
    home.chmod(0o777)
    for file in home.iterdir():
        file.chmod(0o666)
    command = [binary, str(home / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        command[1:1] = ["-u", "postgres"]
    output = home / "stdout.txt"
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode:
        assert process.poll() is None, output.read_text()
        assert time.monotonic() < deadline, "pgbouncer did not start"
        time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(10)
    shutil.rmtree(home, ignore_errors=True)


def _url(port: int, password: str = SECRET) -> str:
    return f"{PG_SCHEME}://{USER}:{password}@127.0.0.1:{port}/test"


async def _workload(
    pgbouncer_mode: bool, port: int, pre_ping_idle: float = 1.0
) -> list[BaseException]:
    """Many clients, prepared statements, transactions: 2 server connections shared."""
    config = DatabaseConfig(
        url=_url(port),
        pgbouncer=pgbouncer_mode,
        pool_size=8,
        max_overflow=0,
        pre_ping_idle=pre_ping_idle,
    )
    engine = create_async_engine_from_config(config)
    errors: list[BaseException] = []

    async def client(worker: int) -> None:
        for i in range(15):
            try:
                async with engine.begin() as connection:
                    value = await connection.execute(text("SELECT CAST(:v AS int) + 1"), {"v": i})
                    assert value.scalar_one() == i + 1
                    names = await connection.execute(
                        text("SELECT count(*) FROM pg_class WHERE relname = :n"),
                        {"n": f"x{worker}"},
                    )
                    assert names.scalar_one() == 0
            except Exception as exc:  # collected and asserted on
                errors.append(exc)

    await asyncio.gather(*(client(w) for w in range(8)))
    await engine.dispose()
    return errors


async def test_pgbouncer_mode_works_in_transaction_pooling(bouncer: int) -> None:
    assert await _workload(True, bouncer) == []


async def test_liveness_pings_work_through_pgbouncer(bouncer: int) -> None:
    """pre_ping_idle=0: every checkout pings (a simple-protocol SELECT 1) through it."""
    failed = COUNTERS.discards.get("failed_ping", 0)
    assert await _workload(True, bouncer, pre_ping_idle=0) == []
    assert COUNTERS.discards.get("failed_ping", 0) == failed  # a failing ping would reconnect


async def test_without_pgbouncer_mode_it_breaks(bouncer: int) -> None:
    """The control: our default settings cannot even connect through PgBouncer."""
    errors = await _workload(False, bouncer)
    assert errors
    # asyncpg sends jit as a startup parameter; psycopg sends it inside ``options``
    refused = "jit" if PG_DRIVER == "asyncpg" else "options"
    assert all(f"unsupported startup parameter: {refused}" in str(e) for e in errors)


async def test_wrong_password_is_a_permanent_error(bouncer: int) -> None:
    engine = create_async_engine_from_config(
        DatabaseConfig(url=_url(bouncer, password="wrong-" + SECRET), pgbouncer=True)
    )
    with pytest.raises(Exception) as caught:  # noqa: PT011 - classified below
        async with engine.connect():
            pass
    await engine.dispose()
    # PgBouncer 1.18 reports a failed login as 08P01 (protocol violation), not 28P01
    assert DatabaseErrorClassifier.error_code(caught.value) in ("08P01", "28P01")
    assert DatabaseErrorClassifier.classify(caught.value) is ErrorCategory.PERMANENT
    assert SECRET not in str(caught.value)
