"""TLS against real TLS-only servers, and passwords that rotate (scripts/ensure-tls.sh).

The servers: a PostgreSQL on 127.0.0.1:5436 that rejects plain TCP (``hostnossl ...
reject``, scram passwords, client certificates for ``bento_cert``) and a MariaDB on
127.0.0.1:3307 with ``require_secure_transport``; both with a server certificate for
``DNS:localhost`` only, so ``127.0.0.1`` fails the host-name check. The plain shared
servers (5432, 3306) stand for "a server without TLS". Every mode, on asyncpg or psycopg
(``TEST_PG_DRIVER``) and asyncmy, checked by the server's own view of the connection
(``pg_stat_ssl``, ``Ssl_cipher``); every failure PERMANENT with its reason, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from litestar_bento_db.resilience import (
    DatabaseErrorClassifier,
    ErrorCategory,
    RetryConfig,
    retry_on_db_error,
)
from litestar_bento_db.resilience.classification import describe_error
from litestar_bento_db.tls import HOST_NAME_MISMATCH, NO_TLS, UNTRUSTED
from tests.conftest import PG_SCHEME, require_server
from tests.load import assert_no_harm, load_around, report_of
from tests.servers import READY, Server, start_server

CERTS = Path(os.environ.get("TEST_TLS_CERTS", "/var/lib/bento-tls/certs"))
CA, OTHER_CA = str(CERTS / "ca.crt"), str(CERTS / "other-ca.crt")
CLIENT_CERT, CLIENT_KEY = str(CERTS / "client.crt"), str(CERTS / "client.key")
PORTS = {"postgresql": 5436, "mysql": 3307}
SCHEMES = {"postgresql": PG_SCHEME, "mysql": "mysql+asyncmy"}
#: the admin of both TLS servers (a superuser there), and its password
ADMIN, ADMIN_PASSWORD = "bento_tls", "bento-tls-pw"
ROTATE = "bento_rotate"
KINDS = ["postgresql", "mysql"]


def require_tls(kind: str) -> None:
    """Skip (locally) or fail (CI) when the TLS server of ``kind`` is not up."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", PORTS[kind]), 2):
            pass
        missing = not Path(CA).is_file()
    except OSError:
        missing = True
    if missing:
        reason = f"the TLS {kind} server (127.0.0.1:{PORTS[kind]}, scripts/ensure-tls.sh) is down"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)


def tls_url(
    kind: str, host: str = "localhost", user: str = ADMIN, password: str | None = None
) -> str:
    """The TLS server's URL (no TLS keys: the tests pass them as settings or add them)."""
    secret = (
        f":{password}" if password is not None else f":{ADMIN_PASSWORD}" if user == ADMIN else ""
    )
    return f"{SCHEMES[kind]}://{user}{secret}@{host}:{PORTS[kind]}/test"


async def encryption(config: DatabaseConfig) -> dict[str, Any]:
    """Connect with ``config``; the server's own view of the connection's TLS."""
    engine = create_async_engine_from_config(config)
    try:
        async with engine.connect() as connection:
            if config.is_postgres:
                row = (
                    await connection.execute(
                        text(
                            "SELECT ssl, version, client_dn FROM pg_stat_ssl "
                            "WHERE pid = pg_backend_pid()"
                        )
                    )
                ).one()
                return {"encrypted": bool(row[0]), "version": row[1], "client": row[2]}
            rows = await connection.execute(text("SHOW SESSION STATUS LIKE 'Ssl_%'"))
            status = {str(name): str(value) for name, value in rows}
            return {
                "encrypted": bool(status.get("Ssl_cipher")),
                "version": status.get("Ssl_version"),
                "client": None,
            }
    finally:
        await engine.dispose()


async def failure(config: DatabaseConfig) -> tuple[ErrorCategory, str, int]:
    """Connect with ``config`` inside a retried unit of work: what failed, and how often
    it was tried."""
    engine = create_async_engine_from_config(config)
    attempts = 0

    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        await retry_on_db_error(attempt, config=RetryConfig(max_attempts=3, base_delay=0.01))
    except Exception as error:
        return DatabaseErrorClassifier.classify(error), describe_error(error), attempts
    finally:
        await engine.dispose()
    raise AssertionError(f"connected with {config.tls}")


@pytest.mark.parametrize("kind", KINDS)
async def test_every_mode_encrypts_as_libpq_says(kind: str) -> None:
    require_tls(kind)
    cases = [
        ("prefer", "127.0.0.1", None),
        ("require", "127.0.0.1", None),  # encrypted, not verified: the name does not matter
        ("verify-ca", "127.0.0.1", CA),  # the CA checked, not the name
        ("verify-full", "localhost", CA),
    ]
    for mode, host, root_cert in cases:
        config = DatabaseConfig(url=tls_url(kind, host), ssl_mode=mode, ssl_root_cert=root_cert)  # type: ignore[arg-type]
        seen = await encryption(config)
        assert seen["encrypted"], (mode, seen)
        assert str(seen["version"]).startswith("TLSv1."), (mode, seen)


@pytest.mark.parametrize("kind", KINDS)
async def test_tls_failures_are_permanent_never_retried_and_say_why(kind: str) -> None:
    require_tls(kind)
    plain = require_server(kind)  # the shared server has no TLS
    verify_full, ca = {"ssl_mode": "verify-full", "ssl_root_cert": CA}, {"ssl_root_cert": CA}
    cases = [
        (tls_url(kind, "127.0.0.1"), verify_full, HOST_NAME_MISMATCH),
        (tls_url(kind), {"ssl_mode": "verify-ca", "ssl_root_cert": OTHER_CA}, UNTRUSTED),
        (tls_url(kind), {"ssl_root_cert": "system"}, UNTRUSTED),
        (plain, {"ssl_mode": "require"}, NO_TLS),
        (plain, ca, NO_TLS),
    ]
    for url, settings, reason in cases:
        config = DatabaseConfig(url=url, **settings)  # type: ignore[arg-type]
        category, described, attempts = await failure(config)
        assert (category, attempts) == (ErrorCategory.PERMANENT, 1), (config.tls, described)
        assert described.startswith(reason), (config.tls, described)
        assert ADMIN_PASSWORD not in described


@pytest.mark.parametrize("kind", KINDS)
async def test_the_tls_only_server_refuses_plain_text(kind: str) -> None:
    """``disable`` reaches the server, which refuses it: PERMANENT by the server's code."""
    require_tls(kind)
    category, described, attempts = await failure(
        DatabaseConfig(url=tls_url(kind, "127.0.0.1"), ssl_mode="disable")
    )
    assert (category, attempts) == (ErrorCategory.PERMANENT, 1), described


@pytest.mark.parametrize("kind", KINDS)
async def test_prefer_connects_in_plain_text_to_a_server_without_tls(kind: str) -> None:
    """libpq's ``prefer``; asyncmy cannot fall back by itself (the connector does)."""
    seen = await encryption(DatabaseConfig(url=require_server(kind), ssl_mode="prefer"))
    assert not seen["encrypted"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_client_certificate_authenticates(kind: str) -> None:
    """``bento_cert`` logs in by certificate (PostgreSQL ``cert``, MariaDB ``REQUIRE X509``)."""
    require_tls(kind)
    password = None if kind == "postgresql" else "bento-cert-pw"
    url = tls_url(kind, user="bento_cert", password=password)
    with_cert = DatabaseConfig(url=url, ssl_root_cert=CA, ssl_cert=CLIENT_CERT, ssl_key=CLIENT_KEY)
    assert with_cert.ssl_mode == "verify-full"  # a CA alone asks for it
    seen = await encryption(with_cert)
    assert seen["encrypted"]
    if kind == "postgresql":
        assert seen["client"] == "/CN=bento_cert"
    category, _, attempts = await failure(DatabaseConfig(url=url, ssl_root_cert=CA))
    assert (category, attempts) == (ErrorCategory.PERMANENT, 1)


async def test_libpq_url_keys_work_on_the_postgresql_driver() -> None:
    """The URL a hosted provider hands out, as given (asyncpg or psycopg)."""
    require_tls("postgresql")
    url = f"{tls_url('postgresql')}?sslmode=verify-full&sslrootcert={CA}"
    assert (await encryption(DatabaseConfig(url=url)))["encrypted"]
    required = f"{tls_url('postgresql', '127.0.0.1')}?sslmode=require"
    assert (await encryption(DatabaseConfig(url=required)))["encrypted"]
    wrong_name = f"{tls_url('postgresql', '127.0.0.1')}?sslmode=verify-full&sslrootcert={CA}"
    category, described, _ = await failure(DatabaseConfig(url=wrong_name))
    assert (category, described) == (ErrorCategory.PERMANENT, HOST_NAME_MISMATCH)


async def test_sqlalchemy_s_mysql_url_keys_keep_working() -> None:
    require_tls("mysql")
    assert (await encryption(DatabaseConfig(url=f"{tls_url('mysql')}?ssl_ca={CA}")))["encrypted"]
    no_name = f"{tls_url('mysql', '127.0.0.1')}?ssl_ca={CA}&ssl_check_hostname=false"
    assert (await encryption(DatabaseConfig(url=no_name)))["encrypted"]
    category, described, _ = await failure(
        DatabaseConfig(url=f"{tls_url('mysql', '127.0.0.1')}?ssl_ca={CA}")
    )
    assert (category, described) == (ErrorCategory.PERMANENT, HOST_NAME_MISMATCH)


# -- passwords that rotate ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def admin(kind: str) -> AsyncIterator[AsyncConnection]:
    """A connection to the TLS server as its admin (over ``verify-full``)."""
    engine = create_async_engine_from_config(
        DatabaseConfig(url=tls_url(kind), ssl_mode="verify-full", ssl_root_cert=CA)
    )
    try:
        async with engine.connect() as connection:
            yield connection
    finally:
        await engine.dispose()


async def _admin(kind: str, statements: list[str]) -> Counter[str]:
    """Run ``statements`` as the TLS server's admin; the keys in bento_chaos, counted."""
    async with admin(kind) as connection:
        for statement in statements:
            await connection.execute(text(statement))
        await connection.commit()
        if statements:
            return Counter()
        rows = await connection.execute(text("SELECT k FROM bento_chaos"))
        return Counter(str(row[0]) for row in rows)


async def _create_table(kind: str) -> None:
    key = "id serial PRIMARY KEY" if kind == "postgresql" else "id int AUTO_INCREMENT PRIMARY KEY"
    await _admin(
        kind,
        [
            "DROP TABLE IF EXISTS bento_chaos",
            f"CREATE TABLE bento_chaos ({key}, k varchar(40) NOT NULL, via varchar(8))",
        ],
    )


async def _stored(kind: str) -> Counter[str]:
    return await _admin(kind, [])


def _set_password(kind: str, password: str) -> str:
    if kind == "postgresql":
        return f"ALTER ROLE {ROTATE} PASSWORD '{password}'"
    return f"ALTER USER '{ROTATE}'@'%' IDENTIFIED BY '{password}'"


async def _rotate(kind: str, password: str) -> object:
    """Change ``bento_rotate``'s password. Returns a mark: connections opened after it
    logged in with the new password (PostgreSQL: the time; MariaDB: the connection id,
    which only grows)."""
    async with admin(kind) as connection:
        await connection.execute(text(_set_password(kind, password)))
        await connection.commit()
        if kind != "postgresql":
            return (await connection.execute(text("SELECT CONNECTION_ID()"))).scalar_one()
        return (await connection.execute(text("SELECT clock_timestamp()"))).scalar_one()


#: how long a backend of before the rotation may stay idle outside a transaction
IDLE_KILL = "10ms"
_SESSIONS_FATAL = "SELECT sessions_fatal FROM pg_stat_database WHERE datname = current_database()"
_RESETS = (
    "ALTER SYSTEM RESET idle_session_timeout",
    "SELECT pg_reload_conf()",
    f"ALTER ROLE {ROTATE} RESET idle_session_timeout",
)


@contextlib.asynccontextmanager
async def _autocommit_admin() -> AsyncIterator[AsyncConnection]:
    """The PostgreSQL TLS server's admin, in autocommit, exempt from ``IDLE_KILL``."""
    async with admin("postgresql") as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("SET idle_session_timeout = 0"))
        yield connection


async def _rotate_killing_idle_backends(password: str, write_file: Path) -> tuple[int, object]:
    """PostgreSQL: change ``bento_rotate``'s password and rewrite ``write_file``, while the
    server ends that role's backends of before the change as soon as one idles outside a
    transaction. Returns how many sessions ended so (waiting up to 5 s for the last of
    them to go), and the mark of :func:`_rotate`.

    Not ``pg_terminate_backend`` on the backends ``pg_stat_activity`` shows ``idle``: the
    signal lands after the look, when the app may have begun a transaction on that
    backend (2 to 9 in 1,000 to 2,200 such kills here, each a transaction lost after its
    first statement: rightly a 503). ``idle_session_timeout`` fires only while a backend
    waits for a command outside a transaction. Backends of before the reload take it
    from the configuration file; logins after it are exempt (a role setting wins over
    the file): a connection replacing a killed one is never killed itself. One admin
    connection, exempt too, does it all."""
    async with _autocommit_admin() as connection:

        async def scalar(query: str, **params: object) -> Any:
            return (await connection.execute(text(query), params)).scalar_one()

        fatal = int(await scalar(_SESSIONS_FATAL))
        try:
            await connection.execute(text(f"ALTER ROLE {ROTATE} SET idle_session_timeout = 0"))
            await connection.execute(text(f"ALTER SYSTEM SET idle_session_timeout = '{IDLE_KILL}'"))
            await connection.execute(text("SELECT pg_reload_conf()"))
            await connection.execute(text(_set_password("postgresql", password)))
            mark = await scalar("SELECT clock_timestamp()")
            await asyncio.to_thread(write_file.write_text, f"{password}\n")
            older = (
                "SELECT count(*) FROM pg_stat_activity "
                f"WHERE usename = '{ROTATE}' AND backend_start < :mark"
            )
            for _ in range(50):
                await connection.execute(text("SELECT pg_stat_clear_snapshot()"))
                if not await scalar(older, mark=mark):
                    break
                await asyncio.sleep(0.1)
        finally:
            for statement in _RESETS:
                await connection.execute(text(statement))
        await connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(await scalar(_SESSIONS_FATAL)) - fatal, mark


async def _stop_killing_idle_backends() -> None:
    """What :func:`_rotate_killing_idle_backends` sets, reset (after a failed test)."""
    for attempt in range(3):  # a connection may be ended while it logs in, meanwhile
        try:
            async with _autocommit_admin() as connection:
                for statement in _RESETS:
                    await connection.execute(text(statement))
            return
        except Exception:
            if attempt == 2:
                raise


async def _logins(kind: str, mark: object) -> tuple[int, int]:
    """``bento_rotate``'s open connections: (opened before ``mark``, after it)."""
    if kind == "postgresql":
        query = (
            "SELECT count(*) FILTER (WHERE backend_start < :mark), "
            "count(*) FILTER (WHERE backend_start >= :mark) "
            f"FROM pg_stat_activity WHERE usename = '{ROTATE}'"
        )
    else:
        query = (
            "SELECT coalesce(sum(id < :mark), 0), coalesce(sum(id > :mark), 0) "
            f"FROM information_schema.processlist WHERE user = '{ROTATE}'"
        )
    async with admin(kind) as connection:
        before, after = (await connection.execute(text(query), {"mark": mark})).one()
        return int(before), int(after)


@pytest.fixture
def rotating(kind: str, tmp_path: Path) -> Iterator[Path]:
    """``bento_rotate`` with a known password, in a file; its password put back after."""
    require_tls(kind)
    secret = tmp_path / "password"
    secret.write_text("rotate-0\n")
    asyncio.run(_admin(kind, [_set_password(kind, "rotate-0")]))
    yield secret
    asyncio.run(_admin(kind, [_set_password(kind, "rotate-0")]))
    if kind == "postgresql":  # whatever a failed test left
        asyncio.run(_stop_killing_idle_backends())


@pytest.mark.parametrize("kind", KINDS)
def test_a_provider_is_asked_for_each_connection_and_once_more_after_a_refusal(
    kind: str, rotating: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    answers = iter(["stale-password", "rotate-0", "rotate-0", "rotate-0"])

    async def provider() -> str:  # a coroutine function, as IAM token helpers are
        await asyncio.sleep(0)
        calls.append("called")
        return next(answers)

    async def run() -> None:
        config = DatabaseConfig(
            url=tls_url(kind, user=ROTATE), ssl_root_cert=CA, password_provider=provider
        )
        engine = create_async_engine_from_config(config)
        try:
            # the first connection: refused with the stale answer, then the fresh one works
            async with engine.connect() as first, engine.connect() as second:
                await first.execute(text("SELECT 1"))
                await second.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    caplog.set_level("DEBUG")
    asyncio.run(run())
    assert len(calls) == 3  # two connections, one of them twice
    assert "trying once more with a fresh one" in caplog.text
    assert "rotate-0" not in caplog.text
    assert "stale-password" not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
async def test_a_refused_password_waits_for_the_file_to_catch_up(kind: str, rotating: Path) -> None:
    """The server has the new password, the file not yet: the connection waits for the
    file to change (up to 1 s) and logs in with what it then says."""
    await _rotate(kind, "rotate-1")
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, rotating.write_text, "rotate-1\n")
    config = DatabaseConfig(url=tls_url(kind, user=ROTATE), ssl_root_cert=CA,
                            password_file=str(rotating))  # fmt: skip
    started = loop.time()
    assert (await encryption(config))["encrypted"]
    assert 0.3 <= loop.time() - started < 1.5


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
async def test_a_password_rotation_under_load_fails_no_request(
    kind: str, rotating: Path, tmp_path: Path, servers: list[Server]
) -> None:
    """The role's password changed and the file rewritten (PostgreSQL: then the app's
    backends of before the change ended by the server as they idle); the pool replaces
    each connection after 1 s, so the app logs in all along, in the middle of the
    rotation too. No request fails."""
    await _create_table(kind)
    url = tls_url(kind, user=ROTATE)
    server = start_server(
        tmp_path,
        "tests.chaos_app:app",
        DB_URL=url,
        DB_SSL_ROOT_CERT=CA,
        DB_PASSWORD_FILE=str(rotating),
        # more connections than the 16 writers hold (some idle, to be killed), each
        # replaced after 1 s: new logins all along
        DB_POOL_SIZE="24",
        DB_MAX_OVERFLOW="0",
        DB_POOL_RECYCLE="1",
        DB_WARMUP_CONNECTIONS="24",
    )
    servers.append(server)
    await asyncio.to_thread(server.wait_ready)
    killed, mark = 0, None

    async def rotate() -> tuple[float, float]:
        nonlocal killed, mark
        loop = asyncio.get_running_loop()
        started = loop.time()
        if kind == "postgresql":
            killed, mark = await _rotate_killing_idle_backends("rotate-1", rotating)
        else:
            mark = await _rotate(kind, "rotate-1")
            await asyncio.to_thread(rotating.write_text, "rotate-1\n")
        return started, loop.time()

    load, broke, back = await load_around(server, rotate, before=1.0, after=2.5)
    report = report_of(kind, "password rotation", load, await _stored(kind), broke, back)
    _, new = await _logins(kind, mark)  # the old ones keep working: a login checks it
    assert new > 0
    assert killed > 0 or kind != "postgresql", report
    assert_no_harm(report, load)
    assert report.unavailable == 0, report
    assert "rotate-1" not in server.output()


# -- the plugin ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_plugin_serves_over_verify_full(
    kind: str, tmp_path: Path, servers: list[Server]
) -> None:
    import httpx

    require_tls(kind)
    asyncio.run(_create_table(kind))
    server = start_server(
        tmp_path,
        "tests.chaos_app:app",
        DB_URL=tls_url(kind),
        DB_SSL_MODE="verify-full",
        DB_SSL_ROOT_CERT=CA,
    )
    servers.append(server)
    server.wait_ready()
    for path in ("/direct/a", "/unit/b"):
        response = httpx.post(server.url(path), timeout=30)
        assert response.status_code == 201, response.text
    assert asyncio.run(_stored(kind)) == Counter({"a": 1, "b": 1})


@pytest.mark.parametrize("kind", KINDS)
def test_readiness_and_the_cli_say_why_tls_failed(
    kind: str, tmp_path: Path, servers: list[Server]
) -> None:
    """A host-name mismatch: readiness 503 with the reason, a request 500 (retrying cannot
    fix it), ``litestar bento-db check`` exits 1 with the reason; no password anywhere."""
    import httpx

    require_tls(kind)
    env = {
        "DB_URL": tls_url(kind, "127.0.0.1"),
        "DB_SSL_MODE": "verify-full",
        "DB_SSL_ROOT_CERT": CA,
    }
    server = start_server(tmp_path, "tests.chaos_app:app", **env)
    servers.append(server)
    server.wait_listening()
    readiness = httpx.get(server.url(READY))
    assert readiness.status_code == 503
    assert HOST_NAME_MISMATCH in readiness.text, readiness.text
    for path in ("/direct/a", "/unit/b"):
        assert httpx.post(server.url(path), timeout=30).status_code == 500
    check = subprocess.run(
        [sys.executable, "-m", "litestar", "--app", "tests.chaos_app:app", "bento-db", "check"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent,
        env={**os.environ, **env, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )  # fmt: skip
    assert check.returncode == 1, check
    assert HOST_NAME_MISMATCH in check.stderr, check.stderr
    for output in (check.stdout + check.stderr, readiness.text, server.output()):
        assert ADMIN_PASSWORD not in output
