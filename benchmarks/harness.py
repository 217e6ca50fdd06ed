"""What the benchmark sections share: the apps, the workloads, servers, wrk and clients."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
MYSQL = os.environ.get("BENCH_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")
#: the hot-standby replica of POSTGRES's database (scripts/ensure-services.sh starts it)
REPLICA = os.environ.get("BENCH_REPLICA_URL", "postgresql://postgres@127.0.0.1:5433/test")
#: POSTGRES's server under another name: configured as a "replica", it is found not to be a
#: standby and stays out of rotation, so reads go to the primary through the routing code
NOT_A_REPLICA = os.environ.get(
    "BENCH_NOT_A_REPLICA_URL", "postgresql://postgres@localhost:5432/test"
)
#: with two CPUs or more, the server runs on one and wrk on another, so that the
#: server's own CPU is what limits it (PostgreSQL is left to the scheduler)
PIN = (os.cpu_count() or 1) >= 2
SERVER_CPU, WRK_CPU = 1, 0
READY = "/health/readiness"

WRK, INSTRUCTIONS, ROUND_TRIPS = "wrk", "instructions", "round-trips"
WRK_256 = "wrk-256"


@dataclass(frozen=True)
class Workload:
    """One kind of request, the same for every app."""

    key: str
    title: str
    lua: str
    """wrk script: a ``request`` function."""
    status: int

    def request(self) -> tuple[str, str, dict[str, int] | None]:
        """Method, path and JSON body of one request (random item)."""
        if self.key == "get":
            return "GET", f"/items/{random.randint(1, 1000)}", None
        if self.key == "list":
            return "GET", f"/items?after={random.randint(0, 980)}", None
        return "POST", "/orders", {"item_id": random.randint(1, 1000), "quantity": 1}


WORKLOADS = (
    Workload(
        "get",
        "GET one row by primary key (`GET /items/{id}`)",
        'request = function() return wrk.format("GET", "/items/" .. math.random(1, 1000)) end\n',
        200,
    ),
    Workload(
        "list",
        "GET a list of 20 ORM rows (`GET /items?after=N`)",
        'request = function() return wrk.format("GET", "/items?after=" .. math.random(0, 980))'
        " end\n",
        200,
    ),
    Workload(
        "insert",
        "ORM insert (`POST /orders`: add, flush for the id, commit; 201)",
        'wrk.headers["Content-Type"] = "application/json"\n'
        'request = function() return wrk.format("POST", "/orders", nil, '
        "'{\"item_id\":' .. math.random(1, 1000) .. ',\"quantity\":1}') end\n",
        201,
    ),
)
WORKLOAD_KEYS = tuple(w.key for w in WORKLOADS)
READS = ("get", "list")


@dataclass(frozen=True)
class App:
    """One app (or variant) of the comparison."""

    key: str
    label: str
    target: str
    env: dict[str, str] = field(default_factory=dict)
    workloads: tuple[str, ...] = WORKLOAD_KEYS
    sections: tuple[str, ...] = (WRK, INSTRUCTIONS, ROUND_TRIPS)
    replica: str | None = None
    """The replica URL it is given (as ``BENCH_REPLICA_URL``), if any."""
    driver: str = "asyncpg"
    """The PostgreSQL driver of the URL it is given (``BENCH_URL``)."""

    def url(self, url: str) -> str:
        """``url`` with this app's driver."""
        if self.driver == "asyncpg":
            return url
        return (
            make_url(url)
            .set(drivername=f"postgresql+{self.driver}")
            .render_as_string(hide_password=False)
        )


BASELINE = "baseline"
APPS = (
    App(BASELINE, "hand-written Litestar + SQLAlchemy (baseline)", "benchmarks.apps.baseline:app"),
    App("aa", "advanced-alchemy SQLAlchemyPlugin", "benchmarks.apps.aa:app"),
    App("ours", "litestar-bento-db DatabasePlugin", "benchmarks.apps.ours:app"),
    App(
        "ours-no-metrics",
        "ours, metrics off",
        "benchmarks.apps.ours:app",
        {"BENCH_METRICS": "0"},
    ),
    App(
        "ours-no-freeze",
        "ours, freeze_gc=False",
        "benchmarks.apps.ours:app",
        {"BENCH_FREEZE_GC": "0"},
    ),
    App(
        "ours-replica",
        "ours, one read replica",
        "benchmarks.apps.ours:app",
        workloads=READS,
        replica=REPLICA,
    ),
    App(
        "ours-routing",
        "ours, replica configured but out of rotation (routing decision only)",
        "benchmarks.apps.ours:app",
        # checked once at start-up (not a standby: out of rotation), not while measured
        {"DB_REPLICA_CHECK_INTERVAL": "3600"},
        workloads=READS,
        sections=(INSTRUCTIONS, ROUND_TRIPS),
        replica=NOT_A_REPLICA,
    ),
    App("raw", "raw asyncpg handler (floor)", "benchmarks.apps.raw:app"),
    # the second PostgreSQL driver: counted, not timed (wrk compares the asyncpg apps)
    App(
        "baseline-psycopg",
        "hand-written app on psycopg 3",
        "benchmarks.apps.baseline:app",
        sections=(INSTRUCTIONS, ROUND_TRIPS),
        driver="psycopg",
    ),
    App(
        "ours-psycopg",
        "ours on psycopg 3",
        "benchmarks.apps.ours:app",
        sections=(INSTRUCTIONS, ROUND_TRIPS),
        driver="psycopg",
    ),
)
APP_KEYS = tuple(app.key for app in APPS)
LABELS = {app.key: app.label for app in APPS}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int) -> list[str]:
    """A command prefix that runs the command on one CPU, when pinning is on."""
    return ["taskset", "-c", str(cpu)] if PIN else []


def server_env(
    url: str, extra_env: dict[str, str] | None = None, replica: str | None = None
) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_URL": url, "LOG_LEVEL": "warning"}
    env.pop("BENCH_REPLICA_URL", None)  # ours reads it: only the replica variants get one
    if replica:
        env["BENCH_REPLICA_URL"] = replica
    return {**env, **(extra_env or {})}


def start_command(app: str, port: int) -> list[str]:
    code = f"from example_app.__main__ import serve; serve({app!r}, '127.0.0.1', {port})"
    return [sys.executable, "-c", code]


def start(
    app: str,
    port: int,
    url: str,
    extra_env: dict[str, str] | None = None,
    *,
    prefix: list[str] | None = None,
    replica: str | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``app`` on ``port``; its output goes to ``log`` (else nowhere)."""
    if log is None:
        sink: Any = subprocess.DEVNULL
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        sink = log.open("wb")  # the child keeps its own descriptor
    try:
        return subprocess.Popen(
            [*(prefix or []), *start_command(app, port)],
            env=server_env(url, extra_env, replica),
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    finally:
        if log is not None:
            sink.close()


#: each served app's output, for a look when it failed (one file per app, overwritten)
LOGS = Path(tempfile.gettempdir()) / "bento-bench-logs"


def wait_for(
    port: int, path: str, timeout: float = 30, process: subprocess.Popen[bytes] | None = None
) -> float:
    started = time.monotonic()
    with httpx.Client(timeout=2) as client:
        while time.monotonic() - started < timeout:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server on port {port} exited ({process.returncode})")
            try:
                if client.get(f"http://127.0.0.1:{port}{path}").status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.002)
    raise RuntimeError(f"port {port} did not answer {path} within {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Server:
    """A running app server."""

    app: App
    port: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def serving(
    app: App,
    url: str = POSTGRES,
    *,
    prefix: list[str] | None = None,
    replica: str | None = None,
    timeout: float = 30,
) -> Iterator[Server]:
    """Run ``app`` until the block ends; ready once ``GET /items/1`` answers 200."""
    port = free_port()
    log = LOGS / f"{app.key}.log"
    process = start(
        app.target,
        port,
        app.url(url),
        app.env,
        prefix=prefix,
        replica=replica or app.replica,
        log=log,
    )
    try:
        wait_for(port, "/items/1", timeout=timeout, process=process)
        yield Server(app, port, process)
    finally:
        stop(process)


@dataclass(frozen=True)
class WrkRun:
    """One wrk run against one app."""

    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    socket_errors: int
    """wrk's connect, read, write errors and timeouts (2 s) together."""


def _ms(output: str, percentile: str) -> float:
    match = re.search(rf"\s{percentile}%\s+([\d.]+)(us|ms|s)\b", output)
    if match is None:
        raise RuntimeError(f"no {percentile}% latency in wrk's output:\n{output}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(server: Server, seconds: float, connections: int, script: Path) -> WrkRun:
    """Requests/s, p50 and p99 latency (ms) and server CPU per request of one wrk run."""
    used = cpu_seconds(server.pid)
    result = subprocess.run(
        [*pinned(WRK_CPU), "wrk", f"-t{1 if PIN else 2}", f"-c{connections}",
         f"-d{seconds}s", "--latency", "-s", str(script), server.base],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    cpu = cpu_seconds(server.pid) - used
    rps_match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if rps_match is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{result.stdout}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if errors:
        raise RuntimeError(
            f"wrk: {errors.group(1)} error responses, {server.app.key} {script.stem}"
        )
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", result.stdout
    )
    failed = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    rps = float(rps_match.group(1))
    p50, p99 = _ms(result.stdout, "50"), _ms(result.stdout, "99")
    # no request answered (a warm-up at 256 connections of a slow app): no CPU per request
    cpu_us = cpu / rps / seconds * 1e6 if rps else math.inf
    return WrkRun(rps, p50, p99, cpu_us, failed)


async def send(
    port: int, workload: Workload, requests: int, connections: int, timeout: float = 300
) -> None:
    """``requests`` requests of ``workload``, ``connections`` at a time; all must succeed."""
    limit = asyncio.Semaphore(connections)
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=timeout
    ) as client:

        async def one() -> None:
            method, path, body = workload.request()
            async with limit:
                response = await client.request(method, path, json=body)
            if response.status_code != workload.status:
                raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")

        await asyncio.gather(*(one() for _ in range(requests)))


def send_sequentially(client: httpx.Client, workload: Workload, requests: int) -> None:
    """``requests`` requests of ``workload`` one after the other on one HTTP connection."""
    for _ in range(requests):
        method, path, body = workload.request()
        response = client.request(method, path, json=body)
        if response.status_code != workload.status:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")


# -- the database ---------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL as asyncpg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def prepare_tables() -> None:
    """Fresh ``bench_item`` (1000 rows) and empty ``bench_order`` on the primary."""
    from benchmarks.apps.common import create_tables
    from litestar_bento_db import DatabaseConfig, create_async_engine_from_config

    engine = create_async_engine_from_config(DatabaseConfig(url=POSTGRES, metrics=False))
    try:
        await create_tables(engine)
    finally:
        await engine.dispose()


async def _replica_state(timeout: float) -> str | None:
    """None when the replica is a reachable standby that has caught up, else why not."""
    import asyncpg

    try:
        replica = await asyncpg.connect(asyncpg_dsn(REPLICA), timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        return f"not reachable ({type(error).__name__}: {error})"
    try:
        if not await replica.fetchval("SELECT pg_is_in_recovery()"):
            return "reachable but not a hot standby (pg_is_in_recovery() is false)"
        primary = await asyncpg.connect(asyncpg_dsn(POSTGRES), timeout=3)
        try:
            target = await primary.fetchval("SELECT pg_current_wal_flush_lsn()::text")
        finally:
            await primary.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            caught_up = await replica.fetchval(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", target
            )
            if caught_up:
                return None
            await asyncio.sleep(0.1)
        return f"did not replay the benchmark tables within {timeout:g} s"
    finally:
        await replica.close()


def replica_problem(timeout: float = 30) -> str | None:
    """Why the replica variant cannot run (None: the replica is ready, tables replayed)."""
    return asyncio.run(_replica_state(timeout))


async def _reads_seen_on_replica() -> int:
    import asyncpg

    replica = await asyncpg.connect(asyncpg_dsn(REPLICA), timeout=3)
    try:
        return int(
            await replica.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND query LIKE '%FROM bench_item%'"
            )
        )
    finally:
        await replica.close()


def reads_reach_replica() -> bool:
    """Some connection to the replica last ran a benchmark read (call while an app runs)."""
    return asyncio.run(_reads_seen_on_replica()) > 0


ROUTING_INACTIVE = (
    "the replica variant's reads were not seen on the replica: DatabasePlugin does not "
    "route reads to `read_replica_urls` (yet?), so its figures are the primary's"
)


def ensure_tools() -> None:
    """Install wrk and valgrind from Debian when missing."""
    missing = [tool for tool in ("wrk", "valgrind") if not shutil.which(tool)]
    if not missing:
        return
    print(f"installing {' '.join(missing)} from Debian ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def load(module: str) -> Any:
    """Import an optional module (matplotlib) without making mypy require it."""
    import importlib

    return importlib.import_module(module)
