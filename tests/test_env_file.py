"""``DB_*`` and ``DATABASE_URL`` from a ``.env`` file (python-dotenv's syntax).

``./.env``, or the file ``DB_ENV_FILE`` names; the real environment wins; a bad value's
error names the variable and the file, never the password.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from litestar_bento_db import ConfigError, DatabaseConfig
from tests.conftest import SECRET

pytestmark = pytest.mark.usefixtures("clean_env")

ENV_FILE = f"""
# the usage guide's .env
export DB_URL="postgresql://app:{SECRET}@db.internal:5432/orders"
DB_POOL_SIZE=20   # a comment
DB_COMMAND_TIMEOUT='15'
OTHER_SETTING=ignored
"""


@pytest.fixture
def in_project(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    clean_env.chdir(tmp_path)
    return tmp_path


def test_dot_env_in_the_working_directory_fills_unset_settings(in_project: Path) -> None:
    (in_project / ".env").write_text(ENV_FILE)
    config = DatabaseConfig()
    assert config.sqlalchemy_url.host == "db.internal"
    assert (config.pool_size, config.command_timeout) == (20, 15.0)
    assert SECRET not in repr(config)


def test_the_real_environment_and_arguments_win(
    in_project: Path, clean_env: pytest.MonkeyPatch
) -> None:
    (in_project / ".env").write_text(ENV_FILE)
    clean_env.setenv("DB_POOL_SIZE", "3")
    config = DatabaseConfig(command_timeout=5)
    assert (config.pool_size, config.command_timeout) == (3, 5.0)


def test_database_url_in_the_file_is_the_fallback(in_project: Path) -> None:
    (in_project / ".env").write_text("DATABASE_URL=mysql://app@db/orders\n")
    assert DatabaseConfig().url == "mysql+asyncmy://app@db/orders"


def test_the_real_database_url_wins_over_the_file_s_db_url(
    in_project: Path, clean_env: pytest.MonkeyPatch
) -> None:
    (in_project / ".env").write_text("DB_URL=mysql://app@db/orders\n")
    clean_env.setenv("DATABASE_URL", "postgresql://app@db/orders")
    assert DatabaseConfig().database_type == "postgresql"


def test_db_env_file_names_another_file(
    in_project: Path, clean_env: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (in_project / ".env").write_text("DB_POOL_SIZE=1\n")
    elsewhere = tmp_path_factory.mktemp("conf") / "db.env"
    elsewhere.write_text("DB_POOL_SIZE=7\n")
    clean_env.setenv("DB_ENV_FILE", str(elsewhere))
    assert DatabaseConfig().pool_size == 7
    clean_env.setenv("DB_ENV_FILE", str(elsewhere.with_name("missing.env")))
    with pytest.raises(ConfigError, match=r"DB_ENV_FILE: no readable file at .*missing\.env"):
        DatabaseConfig()


def test_a_bad_value_names_the_variable_and_the_file(in_project: Path) -> None:
    (in_project / ".env").write_text(f"DB_URL=postgresql://app:{SECRET}@db/x\nDB_POOL_SIZE=abc\n")
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig()
    assert str(caught.value) == "DB_POOL_SIZE in .env: expected an integer >= 0, got 'abc'"
    (in_project / ".env").write_text(f"DB_URL=postgresql://app:{SECRET}@db:x/y\n")
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig()
    assert "DB_URL in .env" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_no_file_no_change(in_project: Path) -> None:
    assert DatabaseConfig().url == "sqlite+aiosqlite:///app.db"
