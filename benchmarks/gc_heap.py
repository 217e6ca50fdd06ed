"""What a full garbage collection scans in each benchmark app, and how long it pauses.

Each app is imported and started (its lifespan, against the local PostgreSQL) in a
process of its own; then the objects the collector tracks are counted and a full
collection (``gc.collect()``) is timed, median of 7. Ours is measured as it starts by
default (``freeze_gc=True``: start-up's objects frozen) and with ``freeze_gc=False``.

    .venv/bin/python -m benchmarks.gc_heap
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.harness import POSTGRES, ROOT

APPS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("hand-written (baseline)", "benchmarks.apps.baseline", {}),
    ("advanced-alchemy plugin", "benchmarks.apps.aa", {}),
    ("ours", "benchmarks.apps.ours", {}),
    ("ours, freeze_gc=False", "benchmarks.apps.ours", {"BENCH_FREEZE_GC": "0"}),
)

CHILD = """
import asyncio, gc, importlib, json, statistics, sys, time
gc.collect()
before = len(gc.get_objects())
module = importlib.import_module(sys.argv[1])
imported = len(gc.get_objects()) + gc.get_freeze_count()

async def main():
    async with module.app.lifespan():
        pauses = []
        for _ in range(7):
            started = time.perf_counter()
            gc.collect()
            pauses.append(time.perf_counter() - started)
        return len(gc.get_objects()), gc.get_freeze_count(), statistics.median(pauses)

tracked, frozen, pause = asyncio.run(main())
print(json.dumps({"interpreter": before, "imported": imported - before, "tracked": tracked,
                  "frozen": frozen, "pause_ms": round(pause * 1000, 1)}))
"""


def measure(module: str, env: dict[str, str]) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, module],
        env={**os.environ, "PYTHONPATH": str(ROOT), "BENCH_URL": POSTGRES, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    print(
        "| app | objects added by importing it | tracked once started "
        "| frozen | full collection (ms) |"
    )
    print("|---|---|---|---|---|")
    for label, module, env in APPS:
        figures = measure(module, env)
        print(
            f"| {label} | {figures['imported']:,.0f} | {figures['tracked']:,.0f} "
            f"| {figures['frozen']:,.0f} | {figures['pause_ms']} |"
        )


if __name__ == "__main__":
    main()
