"""Stop, start and restart the local database servers, for tests that provoke outages.

Every operation waits until the server is in the state asked for. ``restored()`` brings
both servers back whatever happens inside it: a test that stops a server must never
leave it stopped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["DatabaseServer", "MariaDB", "PostgreSQL", "restored", "server_for"]


def _run(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _wait(check: Callable[[], bool], want: bool, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check() is want:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not happen within {timeout:g} s")


class DatabaseServer:
    """One local server: ``is_up``, ``stop``, ``start``, ``restart``."""

    name = "server"

    def is_up(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        """Stop fast and start again."""
        self.stop()
        self.start()

    def ensure_up(self) -> None:
        """Start the server if it is down."""
        if not self.is_up():
            self.start()


class PostgreSQL(DatabaseServer):
    """The Debian cluster ``<version>/main`` on 127.0.0.1:5432."""

    name = "postgresql"

    def __init__(self) -> None:
        versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
        self.version = versions[0] if versions else ""

    def _ctl(self, action: str, *options: str) -> None:
        result = _run(
            "pg_ctlcluster", "--skip-systemctl-redirect", self.version, "main", action, *options
        )
        if result.returncode != 0 and action != "stop":
            raise RuntimeError(f"pg_ctlcluster {action}: {result.stderr.strip()}")

    def is_up(self) -> bool:
        return _run("pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432", timeout=10).returncode == 0

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")
        _wait(self.is_up, False, "PostgreSQL stopping")

    def start(self) -> None:
        self._ctl("start")
        _wait(self.is_up, True, "PostgreSQL starting")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")
        _wait(self.is_up, True, "PostgreSQL restarting")


class MariaDB(DatabaseServer):
    """``/usr/sbin/mariadbd`` on 127.0.0.1:3306."""

    name = "mysql"

    def is_up(self) -> bool:
        return _run("mariadb-admin", "-uroot", "-h127.0.0.1", "ping", timeout=10).returncode == 0

    def stop(self) -> None:
        _run("mariadb-admin", "-uroot", "-h127.0.0.1", "shutdown")
        _wait(self.is_up, False, "MariaDB stopping")
        # the process may still be writing its last pages: wait for it to be gone
        _wait(lambda: _run("pgrep", "-x", "mariadbd").returncode == 0, False, "mariadbd exiting")

    def start(self) -> None:
        result = _run(
            "start-stop-daemon",
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
        )
        if result.returncode != 0:
            raise RuntimeError(f"starting mariadbd: {result.stderr.strip()}")
        _wait(self.is_up, True, "MariaDB starting")


def server_for(kind: str) -> DatabaseServer:
    """The server behind ``"postgresql"`` or ``"mysql"``."""
    return PostgreSQL() if kind == "postgresql" else MariaDB()


@contextlib.contextmanager
def restored() -> Iterator[None]:
    """Whatever happens inside, both servers are running afterwards."""
    try:
        yield
    finally:
        for server in (PostgreSQL(), MariaDB()):
            with contextlib.suppress(RuntimeError):
                server.ensure_up()
