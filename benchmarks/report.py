"""``RESULTS.md`` and the chart, from the figures ``run_all.py`` stores in ``results.json``.

Every ratio is taken against the hand-written app (the baseline) measured in the same
section of the same run:

- instructions: baseline / app (above 1: the app is cheaper);
- round trips: app / baseline (below 1: fewer);
- requests/s: median over the rounds of app / baseline of the same round (above 1:
  faster), with the range of the per-round ratios;
- p99: median over the rounds of app / baseline of the same round (below 1: better).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    APP_KEYS,
    BASELINE,
    INSTRUCTIONS,
    LABELS,
    ROUND_TRIPS,
    WORKLOADS,
    WRK,
    WRK_256,
    load,
)

Results = dict[str, Any]
DASH = "-"
#: columns of a WrkRun as stored
RPS, P50, P99, CPU = range(4)


def _label(key: str) -> str:
    return LABELS.get(key, key)


def _apps(*tables: dict[str, Any] | None) -> list[str]:
    """App keys present in any of ``tables``, in the order of ``APPS``."""
    present = {key for table in tables if table for key in table}
    return [key for key in APP_KEYS if key in present] + sorted(present - set(APP_KEYS))


def paired(runs: dict[str, list[list[float]]], app: str, base: str, column: int) -> list[float]:
    """Per-round ratios app / base of one column."""
    return [a[column] / b[column] for a, b in zip(runs[app], runs[base], strict=True) if b[column]]


def wrk_summary(section: Results, workload: str, app: str) -> dict[str, float] | None:
    runs: dict[str, list[list[float]]] = section["runs"].get(workload, {})
    if app not in runs or BASELINE not in runs or not runs[app]:
        return None
    ratios = paired(runs, app, BASELINE, RPS)
    p99_ratios = paired(runs, app, BASELINE, P99)
    return {
        "rps": statistics.median(r[RPS] for r in runs[app]),
        "ratio": statistics.median(ratios),
        "low": min(ratios),
        "high": max(ratios),
        "p50": statistics.median(r[P50] for r in runs[app]),
        "p99": statistics.median(r[P99] for r in runs[app]),
        "p99_ratio": statistics.median(p99_ratios),
        "cpu": statistics.median(r[CPU] for r in runs[app]),
    }


def wrk_256_table(section: Results) -> list[str]:
    """The wrk figures at 256 connections: requests/s and p99, ratios to the baseline."""
    lines = [
        f"wrk with {section['connections']} connections instead of 32 (the pool stays 10 + 10: "
        "most requests wait for a connection), {rounds} alternating rounds of "
        "{seconds} s{quick}, {pinning}; median paired ratios to the hand-written app.".format(
            rounds=section["rounds"],
            seconds=section["seconds"],
            quick=_quick(section),
            pinning=section["pinning"],
        ),
        "",
        "| workload | app | requests/s | ratio [range] | p50 / p99 (ms) | p99 ratio |",
        "|---|---|---|---|---|---|",
    ]
    for workload in WORKLOADS:
        for app in _apps(section["runs"].get(workload.key)):
            summary = wrk_summary(section, workload.key, app)
            if summary is None:
                continue
            lines.append(
                f"| {workload.key} | {_label(app)} | {summary['rps']:.0f} | "
                f"{summary['ratio']:.3f} [{summary['low']:.2f}-{summary['high']:.2f}] | "
                f"{summary['p50']:.1f} / {summary['p99']:.1f} | {summary['p99_ratio']:.3f} |"
            )
    notes = section.get("notes", [])
    return lines + ([""] + [f"- {note}" for note in notes] if notes else [])


def instructions(section: Results | None, workload: str, app: str) -> float | None:
    if not section:
        return None
    counts: dict[str, float] = section["counts"].get(workload, {})
    return counts.get(app)


def gc_instructions(section: Results | None, workload: str, app: str) -> float | None:
    """Instructions per request spent in garbage collection (None: not measured)."""
    if not section:
        return None
    figures: dict[str, float] = section.get("gc", {}).get(workload, {})
    return figures.get(app)


def without_gc(section: Results | None, workload: str, app: str) -> float | None:
    count, gc = instructions(section, workload, app), gc_instructions(section, workload, app)
    return None if count is None or gc is None else count - gc


def net_instructions(section: Results | None, workload: str, app: str) -> float | None:
    """Instructions per request without garbage collection and the idle background work.

    Work done per second (uvicorn's ticks, the replica watcher's checks) weighs about 30
    times more per request under callgrind than at full speed; a full collection falls
    inside a measurement or not.
    """
    count = without_gc(section, workload, app)
    if not section or count is None or app not in section.get("background", {}):
        return None
    seconds = section["seconds"][workload][app]
    return float(count - section["background"][app] * seconds / section["requests"])


def _ratio_text(base: float | None, value: float | None) -> str:
    return f"{base / value:.3f}" if base and value else DASH


def background_note(section: Results) -> str | None:
    """What the servers ran while idle, and its weight in the figures under callgrind."""
    rates: dict[str, float] = section.get("background", {})
    if not rates:
        return None
    parts = []
    for app in _apps(rates):
        shares = [
            rates[app] * section["seconds"][workload.key][app] / section["requests"] / count
            for workload in WORKLOADS
            if (count := instructions(section, workload.key, app))
        ]
        share = f", {max(shares) * 100:.1f} % of its figures at most" if shares else ""
        parts.append(f"{_label(app)} {rates[app] / 1e3:.0f} K/s{share}")
    return (
        "instructions the servers ran per second while idle, included in the figures above "
        "(under callgrind a server answers about 30 times fewer requests per second than at "
        "full speed, so this background weighs that much more per request): " + "; ".join(parts)
    )


def round_trips(section: Results | None, workload: str, app: str) -> dict[str, float] | None:
    if not section:
        return None
    figures: dict[str, dict[str, float]] = section["busy"].get(workload, {})
    return figures.get(app)


def _total(trips: dict[str, float] | None) -> float | None:
    return None if trips is None else sum(trips.values())


def _trips_text(trips: dict[str, float] | None) -> str:
    if trips is None:
        return DASH
    total = f"{sum(trips.values()):.2f}"
    if "replica" in trips:
        return f"{total} (primary {trips['primary']:.2f} + replica {trips['replica']:.2f})"
    return total


def workload_table(results: Results, workload: str) -> list[str]:
    wrk_section = results.get(WRK)
    counts = (results.get(INSTRUCTIONS) or {}).get("counts", {}).get(workload)
    trips = (results.get(ROUND_TRIPS) or {}).get("busy", {}).get(workload)
    runs = wrk_section["runs"].get(workload) if wrk_section else None
    apps = _apps(counts, trips, runs)
    if not apps:
        return ["(no figures yet)"]
    cg = results.get(INSTRUCTIONS)
    base_count = instructions(cg, workload, BASELINE)
    base_no_gc = without_gc(cg, workload, BASELINE)
    base_trips = _total(round_trips(results.get(ROUND_TRIPS), workload, BASELINE))
    lines = [
        "| app | instructions per request | of which GC | ratio | ratio without GC "
        "| round trips per request | ratio | requests/s | ratio [range] | p50 (ms) "
        "| p99 (ms) | p99 ratio | server CPU (us/request) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for app in apps:
        count = instructions(cg, workload, app)
        gc = gc_instructions(cg, workload, app)
        trip = round_trips(results.get(ROUND_TRIPS), workload, app)
        total = _total(trip)
        cells = [
            _label(app),
            DASH if count is None else f"{count / 1e6:.3f} M",
            DASH if gc is None else f"{gc / 1e6:.3f} M",
            _ratio_text(base_count, count),
            _ratio_text(base_no_gc, without_gc(cg, workload, app)),
        ]
        cells += [
            _trips_text(trip),
            f"{total / base_trips:.2f}" if total is not None and base_trips else DASH,
        ]
        summary = wrk_summary(wrk_section, workload, app) if wrk_section else None
        if summary:
            cells += [
                f"{summary['rps']:.0f}",
                f"{summary['ratio']:.3f} [{summary['low']:.2f}-{summary['high']:.2f}]",
                f"{summary['p50']:.2f}",
                f"{summary['p99']:.2f}",
                f"{summary['p99_ratio']:.3f}",
                f"{summary['cpu']:.0f}",
            ]
        else:
            cells += [DASH] * 6
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _method(results: Results) -> list[str]:
    lines = []
    section = results.get(WRK)
    if section:
        lines.append(
            f"- **requests/s, p50, p99** ({section['date']}{_quick(section)}): wrk, "
            f"{section['connections']} connections, {section['rounds']} round(s); in each round "
            f"every app is started, warmed up ({section['warmup']} s of wrk per workload), "
            f"measured for {section['seconds']} s per workload and stopped, apps in a rotating "
            f"order; {section['pinning']}. Ratios are medians of per-round ratios to the "
            "baseline of the same round. Server CPU is the server process's own CPU time "
            "per request."
        )
    section = results.get(INSTRUCTIONS)
    if section:
        lines.append(
            f"- **instructions per request** ({section['date']}{_quick(section)}): the "
            f"server under valgrind's callgrind, per workload {section['warmup']} requests "
            f"({section['connections']} at a time) to warm up, counters zeroed, "
            f"{section['requests']} requests, counters dumped. Instruction counts do not "
            "depend on what else the machine is doing: they repeat where requests/s vary "
            "by 10-20 % between rounds. Ratio: baseline / app (above 1: cheaper). *Of "
            "which GC*: instructions inside CPython's garbage collector (`gc_collect_main`, "
            "finalizers it ran included); a full collection costs tens of millions and "
            "falls inside a measurement or not, moving a figure by a few per cent, so "
            "*ratio without GC* compares the request paths alone."
        )
    section = results.get(ROUND_TRIPS)
    if section:
        lines.append(
            f"- **round trips per request** ({section['date']}{_quick(section)}): the app's "
            "database URL (and its replica's) points at a counting TCP proxy "
            "(`tests/proxy.py`: a client-to-server burst that follows a server reply is "
            f"one round trip); after {section['warmup']} requests to warm up, "
            f"{section['requests']} requests one after the other (concurrency 1: every "
            "connection was used moments ago), round trips counted and divided; background "
            "traffic (the replica watcher), measured while the app was idle, is subtracted. "
            "Ratio: app / baseline."
        )
    return lines


def _quick(section: Results) -> str:
    return ", --quick: smoke-test figures, not results" if section.get("quick") else ""


def round_trips_table(section: Results) -> list[str]:
    busy: dict[str, dict[str, dict[str, float]]] = section["busy"]
    idle: dict[str, dict[str, float]] = section["idle"]
    background: dict[str, dict[str, float]] = section["background"]
    apps = _apps(*busy.values(), idle, background)
    keys = [w.key for w in WORKLOADS]
    lines = [
        "| app | "
        + " | ".join(f"{key} (busy connection)" for key in keys)
        + f" | get, idle connection (> {section['idle_gap']:g} s) "
        "| background while idle (round trips/s) |",
        "|---|" + "---|" * (len(keys) + 2),
    ]
    for app in apps:
        cells = [_label(app)]
        cells += [_trips_text(busy.get(key, {}).get(app)) for key in keys]
        cells.append(_trips_text(idle.get(app)))
        rate = background.get(app)
        cells.append(f"{sum(rate.values()):.1f}" if rate is not None else DASH)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def callgrind_trips_table(section: Results) -> list[str]:
    """Round trips per request counted during the callgrind measurements."""
    trips: dict[str, dict[str, dict[str, float]]] = section.get("round_trips", {})
    apps = _apps(*trips.values())
    if not apps:
        return []
    keys = [w.key for w in WORKLOADS]
    lines = [
        "| app | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for app in apps:
        cells = [_label(app), *(_trips_text(trips.get(key, {}).get(app)) for key in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return DASH if value is None else format(value, spec)


def targets(results: Results) -> list[str]:
    """The issues' targets next to this run's figures."""
    rows: list[tuple[str, str, str]] = []
    cg = results.get(INSTRUCTIONS)
    rt = results.get(ROUND_TRIPS)
    wk = results.get(WRK)

    def verdict(ok: bool | None) -> str:
        return DASH if ok is None else ("met" if ok else "**not met**")

    for workload in WORKLOADS:
        base, ours = (
            instructions(cg, workload.key, BASELINE),
            instructions(cg, workload.key, "ours"),
        )
        ratio = base / ours if base and ours else None
        clean = _ratio_text(
            without_gc(cg, workload.key, BASELINE), without_gc(cg, workload.key, "ours")
        )
        rows.append(
            (
                f"#14 instructions per request, ours, {workload.key}: baseline / ours >= 1.05",
                DASH if ratio is None else f"{ratio:.3f} (without GC {clean})",
                verdict(None if ratio is None else ratio >= 1.05),
            )
        )
    for workload in WORKLOADS:
        summary = wrk_summary(wk, workload.key, "ours") if wk else None
        rows.append(
            (
                f"#14 requests/s, ours, {workload.key}: median paired ratio >= 1.0",
                DASH if summary is None else f"{summary['ratio']:.3f}",
                verdict(None if summary is None else summary["ratio"] >= 1.0),
            )
        )
    for workload in WORKLOADS:
        for app in ("ours", "ours-no-freeze"):
            summary = wrk_summary(wk, workload.key, app) if wk else None
            rows.append(
                (
                    f"#14 p99, {_label(app)}, {workload.key}: no worse than the baseline's "
                    "(median paired ratio <= 1.0)",
                    DASH if summary is None else f"{summary['p99_ratio']:.3f}",
                    verdict(None if summary is None else summary["p99_ratio"] <= 1.0),
                )
            )
    busy = _total(round_trips(rt, "get", "ours"))
    rows.append(
        (
            "#14 round trips, one-statement request on a busy connection (GET by key): 3",
            _fmt(busy, ".2f"),
            verdict(None if busy is None else abs(busy - 3) < 0.05),
        )
    )
    idle = _total(rt["idle"].get("ours")) if rt else None
    rows.append(
        (
            "#14 round trips, the same on an idle connection (a ping is due): one more",
            _fmt(idle, ".2f"),
            verdict(None if idle is None or busy is None else abs(idle - busy - 1) < 0.05),
        )
    )
    for measure, what in ((instructions, "all instructions"), (without_gc, "without GC")):
        on, off = measure(cg, "get", "ours"), measure(cg, "get", "ours-no-metrics")
        delta = on / off - 1 if on and off else None
        rows.append(
            (
                f"#12 metrics on vs off, instructions per request ({what}), GET by key: within 3 %",
                DASH if delta is None else f"{delta * 100:+.1f} %",
                verdict(None if delta is None else abs(delta) <= 0.03),
            )
        )
    for read in ("get", "list"):
        runs = wk["runs"].get(read, {}) if wk else {}
        if "ours-replica" in runs and "ours" in runs:
            ratios = paired(runs, "ours-replica", "ours", RPS)
            figure = f"{statistics.median(ratios):.3f} [{min(ratios):.2f}-{max(ratios):.2f}]"
        else:
            figure = DASH
        rows.append(
            (
                f"#13 read throughput, {read}: one replica / primary only (ours, "
                "median paired requests/s ratio)",
                figure,
                "(no target)",
            )
        )
        plain = net_instructions(cg, read, "ours")
        for app, what in (
            ("ours-routing", "routing decision (replica out of rotation) - ours"),
            ("ours-replica", "reads on the replica - ours"),
        ):
            count = net_instructions(cg, read, app)
            text = DASH
            if plain and count:
                text = f"{(count - plain) / 1e3:+.0f} K ({(count / plain - 1) * 100:+.1f} %)"
            rows.append(
                (
                    f"#13 instructions per request, {read}: {what} (without GC and idle "
                    "background)",
                    text,
                    "(no target)",
                )
            )
    lines = ["| target | this run | |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines


def render(results: Results, chart: Path | None, root: Path) -> str:
    report = ["# Benchmark results", ""]
    report.append(
        "Written by `benchmarks/run_all.py` (`make bench`; `--only SECTION` reruns one "
        "section and keeps the others' figures). Machine: "
        f"{results.get('machine', 'unknown')}."
    )
    if any((results.get(s) or {}).get("quick") for s in (WRK, INSTRUCTIONS, ROUND_TRIPS)):
        report += ["", "**Smoke test (`--quick`): these figures are not results.**"]
    report += [
        "",
        "## Plugin overhead",
        "",
        "Apps, all with the same pool and driver settings (pool 10 + 10 overflow, asyncpg "
        "`command_timeout` 60 s, jit off), served by uvicorn, one worker, against the local "
        "PostgreSQL: the hand-written Litestar + SQLAlchemy session-per-request app with "
        "SQLAlchemy's `pool_pre_ping=True` (baseline); advanced-alchemy's `SQLAlchemyPlugin` "
        "(autocommit handler, the same pre-ping); ours (`DatabasePlugin` with its defaults: "
        "pre-ping on, that is our liveness checks, metrics on) and its variants; a raw "
        "asyncpg handler (an asyncpg pool, the same SQL) as the floor. The handlers of the "
        "SQLAlchemy apps are one and the same code (`benchmarks/apps/common.py`).",
        "",
        *_method(results),
        "",
        "Ratios: instructions baseline / app (above 1: cheaper), round trips app / "
        "baseline, requests/s app / baseline (above 1: faster), p99 app / baseline "
        "(below 1: better).",
        "",
    ]
    if chart is not None:
        report += [f"![overhead]({chart.relative_to(root).as_posix()})", ""]
    for workload in WORKLOADS:
        report += [f"### {workload.title}", "", *workload_table(results, workload.key), ""]
    notes = [
        f"{section}: {note}"
        for section in (WRK, INSTRUCTIONS, ROUND_TRIPS)
        for note in (results.get(section) or {}).get("notes", [])
    ]
    background = background_note(results[INSTRUCTIONS]) if results.get(INSTRUCTIONS) else None
    if background:
        notes.append(f"{INSTRUCTIONS}: {background}")
    if notes:
        report += ["Notes:", "", *(f"- {note}" for note in dict.fromkeys(notes)), ""]
    if results.get(ROUND_TRIPS):
        report += [
            "### Round trips per request",
            "",
            "Busy: sequential requests, each connection used moments before. Idle: "
            f"requests {results[ROUND_TRIPS]['idle_gap']:g} s apart, longer than ours' "
            "`pre_ping_idle` (1 s), so every connection is due a ping. Replica variants: "
            "primary + replica.",
            "",
            *round_trips_table(results[ROUND_TRIPS]),
            "",
        ]
    cg_trips = callgrind_trips_table(results[INSTRUCTIONS]) if results.get(INSTRUCTIONS) else []
    if cg_trips:
        section = results[INSTRUCTIONS]
        report += [
            "### Round trips per request during the callgrind runs",
            "",
            f"Counted during the instruction measurements ({section['connections']} requests at a "
            "time, the server about 30 times "
            "slower than at full speed, so connections wait longer between uses; "
            "background traffic included):",
            "",
            *cg_trips,
            "",
        ]
    report += ["### Targets (issues 12, 13, 14)", "", *targets(results), ""]
    if results.get(WRK_256):
        report += ["## 256 client connections", "", *wrk_256_table(results[WRK_256]), ""]
    titled = (("ready", "Time to ready"), ("drain", "Drain on SIGTERM"), ("overload", "Overload"))
    for key, title in titled:
        section = results.get(key)
        if section:
            report += [f"## {title}", "", f"Run {section['date']}{_quick(section)}.", ""]
            report += [section["markdown"], ""]
    durations = [
        f"{key} {results[key]['elapsed']:.0f} s"
        for key in (WRK, INSTRUCTIONS, ROUND_TRIPS, WRK_256, "ready", "drain", "overload")
        if results.get(key) and "elapsed" in results[key]
    ]
    if durations:
        report += [f"Time taken by each section: {', '.join(durations)}.", ""]
    return "\n".join(report)


def draw_chart(results: Results, path: Path) -> bool:
    """Grouped bars per workload and app; False when matplotlib is not installed."""
    try:
        matplotlib = load("matplotlib")
    except ImportError:
        return False
    matplotlib.use("Agg")
    plt = load("matplotlib.pyplot")
    workloads = [w.key for w in WORKLOADS]
    cg, rt, wk = results.get(INSTRUCTIONS), results.get(ROUND_TRIPS), results.get(WRK)

    def cg_ratio(workload: str, app: str) -> tuple[float, float, float] | None:
        base, count = instructions(cg, workload, BASELINE), instructions(cg, workload, app)
        return (base / count, 0.0, 0.0) if base and count else None

    def rps_ratio(workload: str, app: str) -> tuple[float, float, float] | None:
        summary = wrk_summary(wk, workload, app) if wk else None
        if summary is None:
            return None
        return (
            summary["ratio"],
            summary["ratio"] - summary["low"],
            summary["high"] - summary["ratio"],
        )

    def p99_ratio(workload: str, app: str) -> tuple[float, float, float] | None:
        summary = wrk_summary(wk, workload, app) if wk else None
        return None if summary is None else (summary["p99_ratio"], 0.0, 0.0)

    def trips(workload: str, app: str) -> tuple[float, float, float] | None:
        total = _total(round_trips(rt, workload, app))
        return None if total is None else (total, 0.0, 0.0)

    panels = [
        ("instructions per request: baseline / app (higher is better)", cg_ratio, 1.0),
        ("requests/s: app / baseline, median and range (higher is better)", rps_ratio, 1.0),
        ("p99 latency: app / baseline (lower is better)", p99_ratio, 1.0),
        ("database round trips per request, busy connection", trips, None),
    ]
    apps = [app for app in APP_KEYS if any(f(w, app) for _, f, _ in panels for w in workloads)]
    if not apps:
        return False
    figure, axes = plt.subplots(2, 2, figsize=(15, 9.5))
    colors = plt.get_cmap("tab10")
    width = 0.8 / len(apps)
    handles: dict[str, Any] = {}
    for axis, (title, figure_of, reference) in zip(axes.flat, panels, strict=True):
        for index, app in enumerate(apps):
            xs, ys, low, high = [], [], [], []
            for position, workload in enumerate(workloads):
                value = figure_of(workload, app)
                if value is not None:
                    xs.append(position - 0.4 + width * (index + 0.5))
                    ys.append(value[0])
                    low.append(value[1])
                    high.append(value[2])
            if xs:
                bars = axis.bar(
                    xs, ys, width, yerr=[low, high] if any(low + high) else None,
                    color=colors(index), label=_label(app), capsize=2,
                )  # fmt: skip
                axis.bar_label(bars, fmt="%.2f", fontsize=6, rotation=90, padding=2)
                handles.setdefault(app, bars)
        if reference is not None:
            axis.axhline(reference, color="black", linewidth=0.8)
        axis.set_title(title, fontsize=10)
        axis.set_xticks(range(len(workloads)), workloads)
        axis.set_xlim(-0.5, len(workloads) - 0.5)
        axis.margins(y=0.12)
        axis.grid(axis="y", alpha=0.3)
    figure.legend(
        [handles[app] for app in apps], [_label(app) for app in apps],
        loc="lower center", ncol=2, fontsize=9,
    )  # fmt: skip
    quick = any((results.get(s) or {}).get("quick") for s in (WRK, INSTRUCTIONS, ROUND_TRIPS))
    figure.suptitle(
        "litestar-bento-db: cost per request against the hand-written app"
        + (" (SMOKE TEST, not results)" if quick else "")
    )
    figure.tight_layout(rect=(0, 0.08, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
