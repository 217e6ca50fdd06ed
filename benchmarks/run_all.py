"""Run the benchmarks and write ``benchmarks/RESULTS.md`` and its chart (on demand, not in CI).

Sections (``--only SECTION`` runs one, keeping the other sections' stored figures):

- ``wrk``: requests/s, p50 and p99 of each app and workload under wrk, server pinned to
  one CPU and wrk to the other, apps in alternating rounds; ratios to the hand-written
  app of the same round.
- ``instructions``: the server's instructions per request under callgrind.
- ``round-trips``: database round trips per request, counted by a TCP proxy between app
  and server (sequential requests, steady state).
- ``wrk-256``: the same with 256 connections instead of 32, the hand-written app,
  advanced-alchemy's and ours, half the rounds.
- ``ready``: process start to the first readiness 200, PostgreSQL and MariaDB.
- ``drain``: SIGTERM with requests inside their transactions: time to exit.
- ``overload``: twice the requests the database can serve, open loop: answers and
  their latency, per app (``benchmarks/overload.py``).

Apps: ``benchmarks/apps`` (see ``harness.APPS``); workloads: GET one row by primary key,
GET a list of 20 ORM rows, an ORM insert (``harness.WORKLOADS``).

    make bench                                   # all sections, about 40 minutes
    .venv/bin/python -m benchmarks.run_all --only round-trips
    .venv/bin/python -m benchmarks.run_all --quick   # smoke test: tiny rounds, ~8 minutes

Figures are stored in ``benchmarks/results/results.json``; ``RESULTS.md`` and
``benchmarks/results/overhead.png`` are drawn from them. ``--quick`` writes to
``benchmarks/results/quick/`` instead (not committed), never over the real results.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import make_url

from benchmarks import overload
from benchmarks.harness import (
    APP_KEYS,
    APPS,
    BASELINE,
    INSTRUCTIONS,
    LOGS,
    MYSQL,
    PIN,
    POSTGRES,
    READY,
    REPLICA,
    ROOT,
    ROUND_TRIPS,
    ROUTING_INACTIVE,
    SERVER_CPU,
    WORKLOADS,
    WRK,
    WRK_256,
    WRK_CPU,
    App,
    ensure_tools,
    free_port,
    pinned,
    prepare_tables,
    reads_reach_replica,
    replica_problem,
    send,
    send_sequentially,
    serving,
    start,
    stop,
    wait_for,
    wrk,
)
from benchmarks.report import draw_chart, render
from tests.proxy import TcpProxy

READY_SECTION, DRAIN, OVERLOAD = "ready", "drain", "overload"
SECTIONS = (WRK, INSTRUCTIONS, ROUND_TRIPS, WRK_256, READY_SECTION, DRAIN, OVERLOAD)
#: the apps of the 256-connection run
WRK_256_APPS = (BASELINE, "aa", "ours")
WORKLOAD = {w.key: w for w in WORKLOADS}
Section = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """How long each section runs."""

    quick: bool
    rounds: int = 8  # wrk: alternating rounds
    seconds: int = 5  # wrk: measured seconds per app, workload and round
    warmup_seconds: int = 1  # wrk: per app, workload and round, after each start
    connections: int = 32  # wrk and callgrind: concurrent requests
    cg_requests: int = 600  # callgrind: measured requests per app and workload
    cg_warmup: int = 300
    cg_idle: float = 2.0  # callgrind: seconds of idle server, for its background work
    rt_requests: int = 300  # round trips: sequential requests per app and workload
    rt_warmup: int = 100
    rt_idle: int = 3  # round trips: requests on idle connections (GET by key)
    rt_idle_gap: float = 1.3  # seconds between those (ours' pre_ping_idle is 1 s)
    rt_quiet: float = 2.0  # seconds of idle app to measure background traffic
    ready_runs: int = 5
    drain_runs: int = 2
    overload_rounds: int = 2
    overload_seconds: float = 10.0


QUICK = Settings(
    quick=True, rounds=1, seconds=2, cg_requests=60, cg_warmup=60, cg_idle=1.0, rt_requests=40,
    rt_warmup=20, rt_idle=1, rt_quiet=1.0, ready_runs=2, drain_runs=2, overload_rounds=1,
    overload_seconds=3.0,
)  # fmt: skip


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def masked(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def usable_apps(apps: Sequence[App], section: str, notes: list[str]) -> list[App]:
    """The apps of a section; the replica variant only with a ready replica (tables set up)."""
    chosen = [app for app in apps if section in app.sections]
    if any(app.replica == REPLICA for app in chosen):
        problem = replica_problem()
        if problem is not None:
            notes.append(
                f"ours, one read replica: skipped, the replica at {masked(REPLICA)} is {problem}"
            )
            log(notes[-1])
            chosen = [app for app in chosen if app.replica != REPLICA]
    return chosen


def check_routing(app: App, notes: list[str]) -> None:
    if app.replica == REPLICA and not reads_reach_replica() and ROUTING_INACTIVE not in notes:
        notes.append(ROUTING_INACTIVE)
        log(ROUTING_INACTIVE)


def _today() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M")


# -- wrk -------------------------------------------------------------------------------


def _wrk_rounds(
    chosen: Sequence[App], settings: Settings, scripts: dict[str, Path], notes: list[str]
) -> dict[str, dict[str, list[list[float]]]]:
    runs: dict[str, dict[str, list[list[float]]]] = {w.key: {} for w in WORKLOADS}
    routing_checked = False
    for round_ in range(settings.rounds):
        shift = round_ % len(chosen)
        for app in [*chosen[shift:], *chosen[:shift]]:
            with serving(app, prefix=pinned(SERVER_CPU)) as server:
                for key in app.workloads:
                    wrk(server, settings.warmup_seconds, settings.connections, scripts[key])
                    if app.replica == REPLICA and not routing_checked:
                        check_routing(app, notes)
                        routing_checked = True
                    run = wrk(server, settings.seconds, settings.connections, scripts[key])
                    runs[key].setdefault(app.key, []).append(list(dataclasses.astuple(run)))
                    if run.socket_errors:
                        notes.append(
                            f"round {round_ + 1}, {app.key}, {key}: wrk counted "
                            f"{run.socket_errors} socket errors or timeouts (> 2 s)"
                        )
                        log(notes[-1])
        log(f"wrk: round {round_ + 1}/{settings.rounds} done")
    return runs


def wrk_section(apps: Sequence[App], settings: Settings) -> Section:
    asyncio.run(prepare_tables())
    notes: list[str] = []
    chosen = usable_apps(apps, WRK, notes)
    folder = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    scripts = {}
    for workload in WORKLOADS:
        scripts[workload.key] = folder / f"{workload.key}.lua"
        scripts[workload.key].write_text(workload.lua)
    try:
        runs = _wrk_rounds(chosen, settings, scripts, notes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    pinning = (
        f"server pinned to CPU {SERVER_CPU} and wrk to CPU {WRK_CPU}"
        if PIN
        else "no CPU pinning (one CPU)"
    )
    return {
        "rounds": settings.rounds,
        "seconds": settings.seconds,
        "warmup": settings.warmup_seconds,
        "connections": settings.connections,
        "pinning": pinning,
        "runs": runs,
        "notes": notes,
    }


# -- instructions ----------------------------------------------------------------------


def _callgrind_total(path: Path) -> int:
    """Instructions executed since the counters were zeroed: the dump's ``summary:``.

    Not its ``totals:`` (the sum of the cost lines written, which the earlier version of
    this benchmark read): that also carries costs of calls begun before the zeroing, some
    M to tens of M instructions that vary from dump to dump (an idle second after a
    zeroing showed 0.6 M in ``summary:`` and 23 M in ``totals:``).
    """
    for line in path.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {path}")


#: the collector's entry point in CPython (Modules/gcmodule.c): its inclusive cost is
#: what garbage collection took, finalizers run by it included
GC_FUNCTION = re.compile(r"^\s*([\d,]+) .*gcmodule\.c:gc_collect_main \[")


def _gc_instructions(path: Path) -> int:
    """Instructions spent in garbage collection in a dump (0 when none ran)."""
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for line in annotated.splitlines():
        match = GC_FUNCTION.match(line)
        if match:
            return int(match.group(1).replace(",", ""))
    return 0


@dataclass(frozen=True)
class Counted:
    """What callgrind counted over one stretch of work."""

    instructions: int
    gc: int
    """Of which in garbage collection."""
    seconds: float


@dataclass
class _Callgrind:
    """A server running under callgrind."""

    pid: int
    out: Path
    dumps: int = 0

    def control(self, command: str) -> None:
        subprocess.run(["callgrind_control", command, str(self.pid)], check=True,
                       capture_output=True)  # fmt: skip

    def counted(self, work: Callable[[], object]) -> Counted:
        """Instructions the server ran while ``work`` ran, and how long it ran."""
        self.control("-z")
        started = time.monotonic()
        work()
        elapsed = time.monotonic() - started
        self.control("-d")
        self.dumps += 1
        dump = Path(f"{self.out}.{self.dumps}")
        return Counted(_callgrind_total(dump), _gc_instructions(dump), elapsed)


def instructions_section(apps: Sequence[App], settings: Settings) -> Section:
    """Server instructions per request under callgrind: the same count run after run.

    Garbage collection is counted apart as well: a full (generation 2) collection costs
    tens of millions of instructions and falls inside a measurement or not, which moves
    a figure by a few per cent; without it, the figures are those of the request path.
    The apps reach their databases through counting proxies (the proxies cost the
    server nothing countable): round trips per request during the measurement show
    that every app did the work expected of it (a replica variant: its reads on the
    replica) while the server ran this slowly.
    """
    asyncio.run(prepare_tables())
    notes: list[str] = []
    chosen = usable_apps(apps, INSTRUCTIONS, notes)
    section: Section = {
        "requests": settings.cg_requests,
        "warmup": settings.cg_warmup,
        "connections": settings.connections,
        "counts": {w.key: {} for w in WORKLOADS},
        "gc": {w.key: {} for w in WORKLOADS},
        "seconds": {w.key: {} for w in WORKLOADS},
        "background": {},
        "round_trips": {w.key: {} for w in WORKLOADS},
        "notes": notes,
    }
    primary, primary_url = _proxy_for(POSTGRES)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as folder:
            for app in chosen:
                started = time.monotonic()
                try:
                    _app_instructions(app, Path(folder), primary, primary_url, settings, section)
                except RuntimeError as error:  # one app's failure keeps the others' figures
                    notes.append(
                        f"{app.key}: not measured ({error}; its log: {LOGS}/{app.key}.log)"
                    )
                    log(notes[-1])
                    continue
                log(f"instructions: {app.key} done in {time.monotonic() - started:.0f} s")
    finally:
        primary.close()
    for key, figures in section["round_trips"].items():
        share = figures.get("ours-replica", {}).get("replica")
        if share is not None and share < 0.95:
            notes.append(
                f"under callgrind, the replica variant made {share:.2f} round trips per "
                f"request to the replica in the {key} workload (1 when every read goes "
                "there): its instruction count is not (only) that of reads on the replica"
            )
            log(notes[-1])
    return section


def _app_instructions(
    app: App,
    folder: Path,
    primary: TcpProxy,
    primary_url: str,
    settings: Settings,
    section: Section,
) -> None:
    out = folder / f"{app.key}.callgrind"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    proxies = {"primary": primary}
    replica_url = None
    if app.replica:
        proxies["replica"], replica_url = _proxy_for(app.replica)
    try:
        with serving(app, primary_url, prefix=valgrind, replica=replica_url, timeout=300) as server:
            callgrind = _Callgrind(server.pid, out)
            for index, key in enumerate(app.workloads):
                workload = WORKLOAD[key]
                asyncio.run(send(server.port, workload, settings.cg_warmup, settings.connections))
                if index == 0:  # warm: what the server runs while idle, per second
                    time.sleep(1.0)  # the warm-up's closing connections done with
                    idle = callgrind.counted(partial(time.sleep, settings.cg_idle))
                    section["background"][app.key] = idle.instructions / idle.seconds
                for proxy in proxies.values():
                    proxy.round_trips = 0
                requests = settings.cg_requests
                measured = send(server.port, workload, requests, settings.connections)
                counted = callgrind.counted(partial(asyncio.run, measured))
                section["counts"][key][app.key] = counted.instructions / requests
                section["gc"][key][app.key] = counted.gc / requests
                section["seconds"][key][app.key] = counted.seconds
                section["round_trips"][key][app.key] = {
                    name: proxy.round_trips / requests for name, proxy in proxies.items()
                }
    finally:
        if "replica" in proxies:
            proxies["replica"].close()


# -- round trips -----------------------------------------------------------------------


def _proxy_for(url: str) -> tuple[TcpProxy, str]:
    """A counting proxy in front of ``url``'s server, and the URL through it."""
    target = make_url(url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    proxy.on()
    return proxy, target.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False
    )


def _counted(
    proxies: dict[str, TcpProxy], work: Callable[[], None]
) -> tuple[dict[str, int], float]:
    """Round trips through each proxy while ``work`` runs, and how long it ran."""
    for proxy in proxies.values():
        proxy.round_trips = 0
    started = time.monotonic()
    work()
    elapsed = time.monotonic() - started
    time.sleep(0.05)  # the proxy thread forwards the last reply
    return {name: proxy.round_trips for name, proxy in proxies.items()}, elapsed


@dataclass
class _Counter:
    """Round trips per request through an app's proxies, net of background traffic."""

    proxies: dict[str, TcpProxy]
    rates: dict[str, float] = dataclasses.field(default_factory=dict)

    def measure_background(self, seconds: float) -> dict[str, float]:
        counts, elapsed = _counted(self.proxies, partial(time.sleep, seconds))
        self.rates = {name: count / elapsed for name, count in counts.items()}
        return self.rates

    def per_request(self, work: Callable[[], None], requests: int) -> dict[str, float]:
        counts, elapsed = _counted(self.proxies, work)
        return {
            name: max(0.0, count - self.rates.get(name, 0.0) * elapsed) / requests
            for name, count in counts.items()
        }


def _app_round_trips(
    app: App, primary: TcpProxy, primary_url: str, settings: Settings, section: Section
) -> None:
    proxies = {"primary": primary}
    replica_url = None
    if app.replica:
        proxies["replica"], replica_url = _proxy_for(app.replica)
    counter = _Counter(proxies)
    try:
        with (
            serving(app, primary_url, replica=replica_url) as server,
            httpx.Client(base_url=server.base, timeout=30) as client,
        ):
            for key in app.workloads:  # connections opened, statements prepared
                send_sequentially(client, WORKLOAD[key], settings.rt_warmup)
            section["background"][app.key] = counter.measure_background(settings.rt_quiet)
            for key in app.workloads:
                workload = WORKLOAD[key]
                send_sequentially(client, workload, 5)
                section["busy"][key][app.key] = counter.per_request(
                    partial(send_sequentially, client, workload, settings.rt_requests),
                    settings.rt_requests,
                )
            if "get" in app.workloads:
                samples = []
                for _ in range(settings.rt_idle):
                    time.sleep(settings.rt_idle_gap)
                    one = partial(send_sequentially, client, WORKLOAD["get"], 1)
                    samples.append(counter.per_request(one, 1))
                section["idle"][app.key] = {
                    name: statistics.mean(sample[name] for sample in samples) for name in proxies
                }
    finally:
        if "replica" in proxies:
            proxies["replica"].close()
    notes = section["notes"]
    reads_on_replica = section["busy"]["get"][app.key].get("replica", 0.0)
    if app.replica == REPLICA and reads_on_replica < 0.5 and ROUTING_INACTIVE not in notes:
        notes.append(ROUTING_INACTIVE)
        log(ROUTING_INACTIVE)


def round_trips_section(apps: Sequence[App], settings: Settings) -> Section:
    asyncio.run(prepare_tables())
    notes: list[str] = []
    chosen = usable_apps(apps, ROUND_TRIPS, notes)
    section: Section = {
        "requests": settings.rt_requests,
        "warmup": settings.rt_warmup,
        "idle_gap": settings.rt_idle_gap,
        "busy": {w.key: {} for w in WORKLOADS},
        "idle": {},
        "background": {},
        "notes": notes,
    }
    primary, primary_url = _proxy_for(POSTGRES)
    try:
        for app in chosen:
            _app_round_trips(app, primary, primary_url, settings, section)
            figures = {key: section["busy"][key][app.key] for key in app.workloads}
            log(f"round trips: {app.key} {figures}")
    finally:
        primary.close()
    return section


# -- time to ready, drain (unchanged) --------------------------------------------------

IMPORT_ONLY = (
    "import time; started = time.perf_counter(); import benchmarks.apps.ours; "
    "print(time.perf_counter() - started)"
)
OURS = "benchmarks.apps.ours:app"


def time_to_ready(settings: Settings) -> Section:
    runs = settings.ready_runs
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
            process = start(OURS, port, url)
            try:
                times.append(wait_for(port, READY, process=process))
            finally:
                stop(process)
        ready = statistics.median(times)
        lines.append(f"| {name} | {ready:.3f} | {min(times):.3f} | {max(times):.3f} |")
    return {"markdown": "\n".join(lines)}


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


def drain_time(settings: Settings, n: int = 20, hold: float = 1.0) -> Section:
    runs = settings.drain_runs
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
            process = start(OURS, port, url)
            wait_for(port, READY, process=process)
            results.append(asyncio.run(_drain_once(port, process, n, hold)))
        exit_time = statistics.median(r[0] for r in results)
        remaining = statistics.median(r[1] for r in results)
        answered = min(r[2] for r in results)
        lines.append(
            f"| {name} | {exit_time:.3f} | {remaining:.3f} | {exit_time - remaining:.3f} "
            f"| {answered}/{n} |"
        )
    return {"markdown": "\n".join(lines)}


# -- main ------------------------------------------------------------------------------


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


def _names(value: str, allowed: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}"
        )
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true",
        help="tiny rounds, for a smoke test; writes to benchmarks/results/quick/",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", default=[], metavar="SECTION",
        type=lambda value: _names(value, SECTIONS, "section"),
        help=f"run only these sections (repeat or comma-separate): {', '.join(SECTIONS)}",
    )  # fmt: skip
    parser.add_argument(
        "--apps", default=None, metavar="APP,...",
        type=lambda value: _names(value, APP_KEYS, "app"),
        help=f"only these apps (the baseline is always added): {', '.join(APP_KEYS)}",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sections = [name for group in args.only for name in group] or list(SECTIONS)
    settings = QUICK if args.quick else Settings(quick=False)
    apps = [app for app in APPS if args.apps is None or app.key in {BASELINE, *args.apps}]
    ensure_tools()
    folder = ROOT / "benchmarks" / "results"
    if args.quick:
        folder = folder / "quick"
        report_path = folder / "RESULTS.md"
    else:
        report_path = ROOT / "benchmarks" / "RESULTS.md"
    data_path, chart_path = folder / "results.json", folder / "overhead.png"
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if data_path.exists():
        results = json.loads(data_path.read_text())
    results["machine"] = machine()
    runners: dict[str, Callable[[], Section]] = {
        WRK: lambda: wrk_section(apps, settings),
        WRK_256: lambda: wrk_section(
            [app for app in apps if app.key in WRK_256_APPS],
            dataclasses.replace(settings, connections=256, rounds=max(1, settings.rounds // 2)),
        ),
        INSTRUCTIONS: lambda: instructions_section(apps, settings),
        ROUND_TRIPS: lambda: round_trips_section(apps, settings),
        READY_SECTION: lambda: time_to_ready(settings),
        DRAIN: lambda: drain_time(settings),
        OVERLOAD: lambda: overload.run(
            settings.overload_rounds, 100.0, settings.overload_seconds, folder / "overload.png"
        ),
    }
    for name in sections:
        log(f"{name}: starting")
        started = time.monotonic()
        section = runners[name]()
        section.update(date=_today(), quick=settings.quick, elapsed=time.monotonic() - started)
        results[name] = section
        log(f"{name}: done in {section['elapsed']:.0f} s")
        # written as each section ends: a later failure keeps what was measured
        data_path.write_text(json.dumps(results, indent=1) + "\n")
        text = write_report(results, report_path, chart_path)
    print(text)


def write_report(results: dict[str, Any], report_path: Path, chart_path: Path) -> str:
    drawn = draw_chart(results, chart_path)
    if not drawn:
        log("no chart: matplotlib is missing (pip install -e '.[bench]') or nothing to draw")
    text = render(results, chart_path if drawn else None, report_path.parent)
    report_path.write_text(text + "\n")
    written = f" and {chart_path.relative_to(ROOT)}" if drawn else ""
    log(f"wrote {report_path.relative_to(ROOT)}{written}")
    return text


if __name__ == "__main__":
    main()
