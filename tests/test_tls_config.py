"""TLS and password settings: one vocabulary, URL keys, and bad values named at construction.

No server: what each driver is handed, and the config errors. tests/test_tls.py connects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy.util import greenlet_spawn

from litestar_bento_db import ConfigError, DatabaseConfig
from litestar_bento_db.credentials import PasswordSource
from litestar_bento_db.engines import get_engine_for_config
from litestar_bento_db.replicas import ReplicaSet
from litestar_bento_db.tls import without_tls_keys
from tests.conftest import SECRET

pytestmark = pytest.mark.usefixtures("clean_env")

PG = "postgresql+asyncpg://app@db.internal/orders"
MYSQL = "mysql+asyncmy://app@db.internal/orders"


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-signed certificate and its key (as CA and as client certificate)."""
    folder = tmp_path_factory.mktemp("pem")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    encrypted = folder / "encrypted.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:x",
         "-out", str(encrypted)],
        check=True, capture_output=True,
    )  # fmt: skip
    not_pem = folder / "not.pem"
    not_pem.write_text("hello\n")
    return {"cert": str(cert), "key": str(key), "encrypted": str(encrypted), "not": str(not_pem)}


def test_no_tls_setting_leaves_the_drivers_defaults() -> None:
    config = DatabaseConfig(url=PG)
    assert config.tls is None
    assert config.ssl_mode is None
    assert "ssl" not in get_engine_for_config(config).get_connect_args()


def test_the_hosted_provider_url_works_as_given(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(
        "DATABASE_URL", f"postgres://app:{SECRET}@ec2-1-2-3-4.aws.com:5432/d?sslmode=require"
    )
    config = DatabaseConfig()
    assert config.ssl_mode == "require"
    # the driver gets it its own way; the URL the dialect sees has no sslmode left
    args = get_engine_for_config(config).get_connect_args()
    assert isinstance(args["ssl"], ssl.SSLContext)
    assert args["ssl"].verify_mode == ssl.CERT_NONE  # require without a CA: libpq's meaning
    assert "sslmode" not in without_tls_keys(config.sqlalchemy_url).query
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("mode", "root", "verify", "host_name"),
    [
        ("require", False, ssl.CERT_NONE, False),
        ("require", True, ssl.CERT_REQUIRED, False),  # a CA given: libpq checks it
        ("verify-ca", True, ssl.CERT_REQUIRED, False),
        ("verify-full", True, ssl.CERT_REQUIRED, True),
    ],
)
def test_modes_become_an_ssl_context(
    pem: dict[str, str], mode: str, root: bool, verify: ssl.VerifyMode, host_name: bool
) -> None:
    root_cert = pem["cert"] if root else None
    for url in (PG, MYSQL):
        config = DatabaseConfig(url=url, ssl_mode=mode, ssl_root_cert=root_cert)  # type: ignore[arg-type]
        context = get_engine_for_config(config).get_connect_args()["ssl"]
        assert (context.verify_mode, context.check_hostname) == (verify, host_name)
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_psycopg_gets_libpq_s_own_keys(pem: dict[str, str]) -> None:
    config = DatabaseConfig(
        url=f"postgresql+psycopg://app@db/orders?sslmode=verify-full&sslrootcert={pem['cert']}"
        f"&sslcert={pem['cert']}&sslkey={pem['key']}"
    )
    args = get_engine_for_config(config).get_connect_args()
    assert (args["sslmode"], args["sslrootcert"]) == ("verify-full", pem["cert"])
    assert (args["sslcert"], args["sslkey"]) == (pem["cert"], pem["key"])
    system = DatabaseConfig(
        url=PG.replace("asyncpg", "psycopg"), ssl_mode="verify-full", ssl_root_cert="system"
    )
    assert get_engine_for_config(system).get_connect_args()["sslrootcert"] == (
        ssl.get_default_verify_paths().cafile or "system"
    )


def test_prefer_and_disable(pem: dict[str, str]) -> None:
    assert (
        get_engine_for_config(DatabaseConfig(url=PG, ssl_mode="prefer")).get_connect_args()["ssl"]
        == "prefer"
    )
    assert (
        get_engine_for_config(DatabaseConfig(url=PG, ssl_mode="disable")).get_connect_args()["ssl"]
        == "disable"
    )
    assert (
        "ssl"
        not in get_engine_for_config(
            DatabaseConfig(url=MYSQL, ssl_mode="disable")
        ).get_connect_args()
    )


def test_mysql_url_keys_keep_sqlalchemy_s_meaning(pem: dict[str, str]) -> None:
    full = DatabaseConfig(url=f"{MYSQL}?ssl_ca={pem['cert']}")
    assert full.tls is not None
    assert full.tls.mode == "verify-full"
    ca_only = DatabaseConfig(url=f"{MYSQL}?ssl_ca={pem['cert']}&ssl_check_hostname=false")
    assert ca_only.tls is not None
    assert ca_only.tls.mode == "verify-ca"
    client = DatabaseConfig(url=f"{MYSQL}?ssl_cert={pem['cert']}&ssl_key={pem['key']}")
    assert client.tls is not None
    assert client.tls.mode == "require"
    # an explicit mode wins over what the keys imply by default
    explicit = DatabaseConfig(url=f"{MYSQL}?ssl_ca={pem['cert']}", ssl_mode="verify-ca")
    assert explicit.tls is not None
    assert explicit.tls.mode == "verify-ca"


def test_a_ca_alone_asks_for_verify_full(
    clean_env: pytest.MonkeyPatch, pem: dict[str, str]
) -> None:
    clean_env.setenv("DB_URL", PG)
    clean_env.setenv("DB_SSL_ROOT_CERT", pem["cert"])
    assert DatabaseConfig().ssl_mode == "verify-full"


def test_replicas_inherit_the_primary_s_tls(pem: dict[str, str]) -> None:
    config = DatabaseConfig(
        url=f"{PG}?sslmode=verify-ca&sslrootcert={pem['cert']}",
        read_replica_urls=("postgresql+asyncpg://app@replica/orders",),
    )
    replica_set = ReplicaSet(config)
    replica = replica_set.replicas[0].settings.config
    assert replica.tls == config.tls


@pytest.mark.parametrize(
    ("kwargs", "env", "fragment"),
    [
        ({"ssl_mode": "allow"}, {}, "ssl_mode: expected one of disable, prefer, require"),
        ({}, {"DB_SSL_MODE": "strict"}, "DB_SSL_MODE: expected one of"),
        ({"url": f"{PG}?sslmode=bogus"}, {}, "url (sslmode): expected one of"),
        ({"ssl_mode": "verify-full"}, {}, "needs ssl_root_cert (DB_SSL_ROOT_CERT)"),
        ({"ssl_mode": "verify-ca"}, {}, "or 'system' for the system's trusted CAs"),
        ({"ssl_root_cert": "/no/such/ca.pem"}, {}, "ssl_root_cert: no such file: /no/such/ca.pem"),
        ({}, {"DB_SSL_CERT": "/no/such/cert.pem"}, "DB_SSL_CERT: no such file"),
        ({"ssl_root_cert": "NOT"}, {}, "ssl_root_cert (DB_SSL_ROOT_CERT): not a PEM CA"),
        ({"ssl_cert": "NOT"}, {}, "ssl_cert, ssl_key (DB_SSL_CERT, DB_SSL_KEY): not a PEM"),
        ({"ssl_cert": "CERT", "ssl_key": "ENCRYPTED"}, {}, "the private key is encrypted"),
        ({"ssl_key": "KEY"}, {}, "ssl_key (DB_SSL_KEY) is given without ssl_cert"),
        ({"ssl_mode": "disable", "ssl_root_cert": "CERT"}, {}, "is 'disable' but a certificate"),
        ({"url": f"{PG}?sslmode=require", "ssl_mode": "verify-ca", "ssl_root_cert": "CERT"}, {},
         "ssl_mode (DB_SSL_MODE) is 'verify-ca' but the url's sslmode asks for 'require'"),
        ({"url": f"{MYSQL}?sslmode=require"}, {}, "sslmode is not a TLS setting of mysql URLs"),
        ({"url": f"{MYSQL}?ssl_capath=/etc/ssl"}, {}, "ssl_capath is not a TLS setting of mysql"),
        ({"url": f"{PG}?ssl_ca=/etc/ssl"}, {}, "ssl_ca is not a TLS setting of postgresql"),
        ({"url": "sqlite+aiosqlite:///x.db", "ssl_mode": "require"}, {}, "SQLite has no TLS"),
        ({"password_file": "/no/such/secret"}, {}, "password_file: no such file"),
        ({}, {"DB_PASSWORD_FILE": "/no/such/secret"}, "DB_PASSWORD_FILE: no such file"),
        ({"password_provider": "hunter2"}, {}, "password_provider: expected a callable, got str"),
        ({"password_file": "CERT", "password_provider": str}, {}, "and password_provider are"),
        ({"url": f"postgresql://app:{SECRET}@db/orders", "password_file": "CERT"}, {},
         "password_file is set and a URL holds a password too"),
        ({"url": "sqlite+aiosqlite:///x.db", "password_provider": str}, {}, "takes no password"),
    ],
)  # fmt: skip
def test_bad_values_are_config_errors_naming_the_setting(
    clean_env: pytest.MonkeyPatch,
    pem: dict[str, str],
    kwargs: dict[str, object],
    env: dict[str, str],
    fragment: str,
) -> None:
    files = {
        "CERT": pem["cert"],
        "KEY": pem["key"],
        "ENCRYPTED": pem["encrypted"],
        "NOT": pem["not"],
    }
    kwargs = {
        key: files.get(value, value) if isinstance(value, str) else value
        for key, value in kwargs.items()
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig(**{"url": PG, **kwargs})  # type: ignore[arg-type]
    assert fragment in str(caught.value)
    assert SECRET not in str(caught.value)


def test_password_settings_never_show_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(f"{SECRET}\n")

    def provider() -> str:
        return SECRET

    for config in (
        DatabaseConfig(url=PG, password_file=str(secret)),
        DatabaseConfig(url=PG, password_provider=provider),
    ):
        assert SECRET not in repr(config)
        assert SECRET not in str(config.safe_dict())
        replaced = dataclasses.replace(config, url=MYSQL)
        assert replaced.password_file == config.password_file


async def test_a_refused_password_is_read_again_past_a_file_being_rewritten(
    tmp_path: Path,
) -> None:
    """A file rewritten in place reads empty between its truncation and its write: that
    is not the new password, it is waited past like the old one."""
    secret = tmp_path / "password"
    secret.write_text("")  # truncated, the new password not written yet
    source = PasswordSource(file=str(secret))
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, secret.write_text, "rotate-1\n")
    started = time.monotonic()
    assert await greenlet_spawn(source.read_changed, "rotate-0", 2.0) == "rotate-1"
    assert time.monotonic() - started >= 0.15
    # after the wait, whatever the file says then
    secret.write_text("")
    assert await greenlet_spawn(source.read_changed, "rotate-1", 0.1) == ""
