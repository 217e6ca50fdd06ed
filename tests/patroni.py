"""The 3-node Patroni cluster of scripts/ensure-patroni.sh, driven by the failover tests.

Nodes ``pg1``-``pg3`` (PostgreSQL on 127.0.0.1:5441-5443, Patroni's REST API on
8441-8443), HAProxy on 127.0.0.1:5440 to the leader and 5439 to the replicas.
:func:`require_patroni` runs the script (seconds when all is up) and skips the test
locally, or fails it under ``CI=true``, when the cluster cannot be had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.db_control import _wait

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "ensure-patroni.sh"
NODES = {"pg1": 1, "pg2": 2, "pg3": 3}
HOST = "127.0.0.1"
HAPROXY_PRIMARY = 5440
DATA_ROOT = Path("/var/lib/bento-patroni")


def pg_port(node: str) -> int:
    """The PostgreSQL port of ``node``."""
    return 5440 + NODES[node]


def rest(node: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    """Patroni's REST API of ``node``: GET, or POST ``body``; the JSON answer (or text)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://{HOST}:{8440 + NODES[node]}{path}",
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        text = answer.read().decode()
    try:
        return json.loads(text)
    except ValueError:
        return text


def cluster() -> dict[str, Any]:
    """``GET /cluster`` from the first node that answers."""
    for node in NODES:
        try:
            return dict(rest(node, "/cluster", timeout=2))
        except OSError:
            continue
    raise RuntimeError("no Patroni node answers")


def leader() -> str | None:
    """The leader's name, if there is one."""
    members = cluster().get("members", [])
    return next((m["name"] for m in members if m["role"] == "leader"), None)


def sync_standby() -> str | None:
    """The synchronous standby's name (the candidate of a switchover or failover)."""
    members = cluster().get("members", [])
    return next((m["name"] for m in members if m["role"] == "sync_standby"), None)


def ensure(timeout: float = 300) -> None:
    """Run scripts/ensure-patroni.sh: the cluster up, healthy, every node streaming."""
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ensure-patroni.sh failed:\n{result.stdout}\n{result.stderr}")


def require_patroni() -> None:
    """The cluster up (started if needed); skip locally or fail under CI without it."""
    try:
        ensure()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        reason = f"Patroni cluster not available: {error}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)


def switchover(current: str, candidate: str) -> None:
    """Patroni's switchover from ``current`` to ``candidate``; returns when it is done."""
    rest(current, "/switchover", {"leader": current, "candidate": candidate}, timeout=60)


def kill_hard(node: str) -> None:
    """SIGKILL ``node``'s Patroni and postmaster (a machine that dies)."""
    patroni_pid = int((DATA_ROOT / node / "patroni.pid").read_text().split()[0])
    postmaster_pid = int((DATA_ROOT / node / "data" / "postmaster.pid").read_text().split()[0])
    for pid in (patroni_pid, postmaster_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_for_leader(other_than: str, timeout: float = 90) -> str:
    """Until a node other than ``other_than`` leads; its name."""
    found: list[str] = []

    def led() -> bool:
        try:
            current = leader()
        except RuntimeError:
            return False
        if current is not None and current != other_than:
            found.append(current)
            return True
        return False

    _wait(led, True, f"a new leader other than {other_than}", timeout)
    return found[-1]


def writable_server(port: int) -> int | None:
    """The port of the server behind ``port`` if it accepts writes now (a new connection).

    Through HAProxy, the port of the node it routes to.
    """
    command = [
        "psql", "-X", "-q", "-At", "-h", HOST, "-p", str(port), "-U", "postgres", "-d", "test",
        "-c", "SELECT pg_is_in_recovery(), inet_server_port()",
    ]  # fmt: skip
    environment = {**os.environ, "PGCONNECT_TIMEOUT": "1"}
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=3, env=environment, check=False
        )
    except subprocess.TimeoutExpired:
        return None
    recovery, _, server_port = result.stdout.strip().partition("|")
    if result.returncode != 0 or recovery != "f":
        return None
    return int(server_port)


def first_writable(ports: list[int], old_leader: str, timeout: float = 120) -> float:
    """``time.monotonic()`` when a node other than ``old_leader`` first accepts writes
    through one of ``ports`` (HAProxy's, or the other nodes' own)."""
    old_port = pg_port(old_leader)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for port in ports:
            server = writable_server(port)
            if server is not None and server != old_port:
                return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"no new writable primary through {ports} within {timeout} s")


async def move_primary(
    event: str, old: str, candidate: str, ports: list[int]
) -> tuple[float, float]:
    """A ``switchover`` from ``old`` to ``candidate``, or a hard ``failover`` (``old``
    killed); returns when it began and when a new primary was first writable through one
    of ``ports`` (polled from before the event)."""
    reachable = asyncio.ensure_future(asyncio.to_thread(first_writable, ports, old))
    began = time.monotonic()
    if event == "switchover":
        await asyncio.to_thread(switchover, old, candidate)
    else:
        kill_hard(old)
    return began, await reachable
