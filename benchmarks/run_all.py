"""Run the benchmarks and write ``benchmarks/RESULTS.md`` (on demand, not in CI).

1. Plugin overhead: the same handler (one row by primary key through an injected
   session) in three apps served by uvicorn, one worker each, against the local
   PostgreSQL: a hand-written Litestar + SQLAlchemy app (baseline), advanced-alchemy's
   SQLAlchemyPlugin, and ours. wrk drives them in alternating rounds within one run;
   requests/s and p99 latency are reported as ratios to the baseline.
   The same apps are then run under callgrind: instructions per request, a count that
   does not vary with the machine's load.
2. Time to ready: process start to the first readiness 200, PostgreSQL and MariaDB,
   median of several runs, next to the bare import time of the app.
3. Drain: SIGTERM with N requests inside their transactions: time to exit against the
   longest remaining transaction.

    make bench      # or: .venv/bin/python -m benchmarks.run_all [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx

from benchmarks.apps.common import COMMAND_TIMEOUT, create_table
from litestar_bento_db import DatabaseConfig, create_async_engine_from_config

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
MYSQL = os.environ.get("BENCH_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")
BASELINE = "hand-written Litestar + SQLAlchemy (baseline)"
#: name -> (app, extra environment); the first is the baseline of the ratios
APPS: dict[str, tuple[str, dict[str, str]]] = {
    BASELINE: ("benchmarks.apps.baseline:app", {}),
    "advanced-alchemy SQLAlchemyPlugin": ("benchmarks.apps.aa:app", {}),
    "litestar-bento-db DatabasePlugin": ("benchmarks.apps.ours:app", {}),
    "for scale: the baseline without asyncpg's command_timeout": (
        "benchmarks.apps.baseline:app",
        {"BENCH_COMMAND_TIMEOUT": "0"},
    ),
}
#: with two CPUs or more, the server runs on one and wrk on another, so that the
#: server's own CPU is what limits it (PostgreSQL is left to the scheduler)
PIN = (os.cpu_count() or 1) >= 2
SERVER_CPU, WRK_CPU = 1, 0
READY = "/health/readiness"
WRK_SCRIPT = (
    'request = function() return wrk.format("GET", "/items/" .. math.random(1, 1000)) end\n'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int) -> list[str]:
    """A command prefix that runs the command on one CPU, when pinning is on."""
    return ["taskset", "-c", str(cpu)] if PIN else []


def server_env(url: str, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_URL": url, "LOG_LEVEL": "warning"}
    return {**env, **(extra_env or {})}


def start_command(app: str, port: int) -> list[str]:
    code = f"from example_app.__main__ import serve; serve({app!r}, '127.0.0.1', {port})"
    return [sys.executable, "-c", code]


def start(
    app: str, port: int, url: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*pinned(SERVER_CPU), *start_command(app, port)], env=server_env(url, extra_env),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_for(port: int, path: str, timeout: float = 30) -> float:
    started = time.monotonic()
    with httpx.Client(timeout=2) as client:
        while time.monotonic() - started < timeout:
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
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def wrk(port: int, seconds: int, connections: int, script: Path) -> tuple[float, float]:
    """Requests/s and p99 latency (ms) of one wrk run."""
    result = subprocess.run(
        [*pinned(WRK_CPU), "wrk", f"-t{1 if PIN else 2}", f"-c{connections}", f"-d{seconds}s",
         "--latency", "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", result.stdout).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses on port {port}")
    return rps, p99


async def _prepare(url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=url))
    await create_table(engine)
    await engine.dispose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    """One wrk run against one app."""

    rps: float
    p99_ms: float
    cpu_us_per_request: float


def plugin_overhead(rounds: int, seconds: int, connections: int) -> str:
    asyncio.run(_prepare(POSTGRES))
    script = Path(tempfile.mkdtemp()) / "items.lua"
    script.write_text(WRK_SCRIPT)
    ports = {name: free_port() for name in APPS}
    processes = {name: start(app, ports[name], POSTGRES, env) for name, (app, env) in APPS.items()}
    try:
        for name in APPS:
            wait_for(ports[name], "/items/1")
            wrk(ports[name], 2, connections, script)  # warm up
        runs: dict[str, list[Run]] = {name: [] for name in APPS}
        for _ in range(rounds):
            for name in APPS:
                pid = processes[name].pid
                used = cpu_seconds(pid)
                rps, p99 = wrk(ports[name], seconds, connections, script)
                cpu_us = (cpu_seconds(pid) - used) / (rps * seconds) * 1e6
                runs[name].append(Run(rps, p99, cpu_us))
    finally:
        for process in processes.values():
            stop(process)
    base = runs[BASELINE]
    pinning = (
        f"server pinned to CPU {SERVER_CPU} and wrk to CPU {WRK_CPU}"
        if PIN
        else "no CPU pinning (one CPU)"
    )
    lines = [
        f"wrk, {connections} connections, {seconds} s per run, {rounds} alternating rounds; "
        "`GET /items/{id}` (one row by primary key), PostgreSQL; identical engine settings "
        f"in all apps: pool 10 + 10 overflow, pre-ping on, asyncpg `command_timeout` "
        f"{COMMAND_TIMEOUT:g} s, jit off; {pinning}. Ratios are the median of the "
        "per-round ratios to the baseline run of the same round (range in brackets); "
        "server CPU is the server process's own CPU time per request.",
        "",
        "| app | requests/s | ratio | p99 latency (ms) | ratio | server CPU (us/request) |",
        "|---|---|---|---|---|---|",
    ]
    for name, samples in runs.items():
        ratios = [run.rps / b.rps for run, b in zip(samples, base, strict=True)]
        p99_ratios = [run.p99_ms / b.p99_ms for run, b in zip(samples, base, strict=True)]
        lines.append(
            f"| {name} | {statistics.median(r.rps for r in samples):.0f} "
            f"| {statistics.median(ratios):.3f} [{min(ratios):.2f}-{max(ratios):.2f}] "
            f"| {statistics.median(r.p99_ms for r in samples):.2f} "
            f"| {statistics.median(p99_ratios):.3f} "
            f"| {statistics.median(r.cpu_us_per_request for r in samples):.0f} |"
        )
    return "\n".join(lines)


async def _get_items(port: int, requests: int, connections: int) -> None:
    """``requests`` GETs of random items, ``connections`` at a time; all must be 200."""
    limit = asyncio.Semaphore(connections)
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=300) as client:

        async def get_one() -> None:
            async with limit:
                response = await client.get(
                    f"http://127.0.0.1:{port}/items/{random.randint(1, 1000)}"
                )
                response.raise_for_status()

        await asyncio.gather(*(get_one() for _ in range(requests)))


def _callgrind_total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def instructions_per_request(requests: int, warmup: int, connections: int) -> str:
    """Server instructions per request under callgrind: the same count run after run."""
    asyncio.run(_prepare(POSTGRES))
    folder = Path(tempfile.mkdtemp())
    counts: dict[str, float] = {}
    for name, (app, env) in APPS.items():
        port = free_port()
        out = folder / f"{len(counts)}.callgrind"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             *start_command(app, port)],
            env=server_env(POSTGRES, env), cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(port, "/items/1", timeout=300)
            asyncio.run(_get_items(port, warmup, connections))
            subprocess.run(
                ["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True
            )
            asyncio.run(_get_items(port, requests, connections))
            subprocess.run(
                ["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True
            )
        finally:
            stop(server)
        counts[name] = _callgrind_total(Path(f"{out}.1")) / requests
    base = counts[BASELINE]
    lines = [
        f"The same apps under valgrind's callgrind: {requests} requests ({connections} at a "
        f"time, after {warmup} to warm up) and the instructions the server process executed "
        "for them, counters zeroed before and dumped after. Instruction counts do not "
        "depend on what else the machine is doing, so these ratios repeat within about "
        "1 % where the requests/s above vary by 10 % or more between rounds. The ratio is "
        "baseline instructions / app instructions (above 1: cheaper than the baseline).",
        "",
        "| app | instructions per request | ratio |",
        "|---|---|---|",
    ]
    for name, count in counts.items():
        lines.append(f"| {name} | {count / 1e6:.3f} M | {base / count:.3f} |")
    return "\n".join(lines)


IMPORT_ONLY = (
    "import time; started = time.perf_counter(); import benchmarks.apps.ours; "
    "print(time.perf_counter() - started)"
)


def time_to_ready(runs: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", IMPORT_ONLY]
    imports = [
        float(subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True).stdout)
        for _ in range(runs)
    ]
    imported = statistics.median(imports)
    lines = [
        f"Process start (`python -c ... serve(...)`) to the first readiness 200, median of "
        f"{runs} runs, 5 warm-up connections, pre-ping on. For scale: importing the same "
        f"app, measured inside a separate process, takes {imported:.3f} s (median; Litestar "
        "and advanced-alchemy are most of it), so engine, warm-up and the first probe are a "
        "small part of the total.",
        "",
        "| database | time to ready (s) | min | max |",
        "|---|---|---|---|",
    ]
    for name, url in (("PostgreSQL (asyncpg)", POSTGRES), ("MariaDB (asyncmy)", MYSQL)):
        times = []
        for _ in range(runs):
            port = free_port()
            process = start("benchmarks.apps.ours:app", port, url)
            try:
                times.append(wait_for(port, READY))
            finally:
                stop(process)
        ready = statistics.median(times)
        lines.append(f"| {name} | {ready:.3f} | {min(times):.3f} | {max(times):.3f} |")
    return "\n".join(lines)


async def _drain_once(
    port: int, process: subprocess.Popen[bytes], n: int, hold: float
) -> tuple[float, float, int]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        sent = time.monotonic()
        requests = [
            asyncio.ensure_future(client.post(f"http://127.0.0.1:{port}/hold?seconds={hold}"))
            for _ in range(n)
        ]
        await asyncio.sleep(hold * 0.3)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        responses = await asyncio.gather(*requests, return_exceptions=True)
    await asyncio.to_thread(process.wait, 60)
    exited = time.monotonic()
    ok = sum(isinstance(r, httpx.Response) and r.status_code == 200 for r in responses)
    return exited - signalled, hold - (signalled - sent), ok


def drain_time(n: int, hold: float, runs: int) -> str:
    lines = [
        f"SIGTERM while {n} requests are inside their transactions (each holds {hold} s); "
        f"time from the signal to process exit (interpreter teardown included), median of "
        f"{runs} runs.",
        "",
        "| database | time to exit (s) | longest remaining transaction (s) | overhead (s) "
        "| requests answered 200 |",
        "|---|---|---|---|---|",
    ]
    for name, url in (("PostgreSQL", POSTGRES), ("MariaDB", MYSQL)):
        results = []
        for _ in range(runs):
            port = free_port()
            process = start("benchmarks.apps.ours:app", port, url)
            wait_for(port, READY)
            results.append(asyncio.run(_drain_once(port, process, n, hold)))
        exit_time = statistics.median(r[0] for r in results)
        remaining = statistics.median(r[1] for r in results)
        answered = min(r[2] for r in results)
        lines.append(
            f"| {name} | {exit_time:.3f} | {remaining:.3f} | {exit_time - remaining:.3f} "
            f"| {answered}/{n} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = Path("/proc/meminfo").read_text().split("\n")[0].split(":")[1].strip()
    packages = ", ".join(
        f"{p} {version(p)}"
        for p in ("litestar", "sqlalchemy", "advanced-alchemy", "asyncpg", "asyncmy", "uvicorn")
    )
    wrk_version = subprocess.run(
        ["wrk", "--version"], capture_output=True, text=True
    ).stdout.split()[:2]
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory} memory, {platform.platform()}, "
        f"Python {platform.python_version()}; {packages}; {' '.join(wrk_version)}"
    )


def ensure_tools() -> None:
    """Install wrk and valgrind from Debian when missing."""
    missing = [tool for tool in ("wrk", "valgrind") if not shutil.which(tool)]
    if not missing:
        return
    print(f"installing {' '.join(missing)} from Debian ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    args = parser.parse_args()
    ensure_tools()
    rounds, seconds, runs = (1, 3, 2) if args.quick else (12, 5, 5)
    requests = 100 if args.quick else 600
    sections = [
        ("Plugin overhead", plugin_overhead(rounds, seconds, connections=32)),
        (
            "Plugin overhead in instructions",
            instructions_per_request(requests, warmup=requests // 2, connections=32),
        ),
        ("Time to ready", time_to_ready(runs)),
        ("Drain on SIGTERM", drain_time(n=20, hold=1.0, runs=max(2, runs // 2))),
    ]
    report = [
        "# Benchmark results",
        "",
        f"Run on {dt.date.today().isoformat()} by `benchmarks/run_all.py`"
        f"{' --quick' if args.quick else ''}. Machine: {machine()}.",
        "",
    ]
    for title, body in sections:
        report += [f"## {title}", "", body, ""]
    text = "\n".join(report)
    (ROOT / "benchmarks" / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
