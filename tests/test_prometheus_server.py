"""A real Prometheus scrapes the example app's ``/metrics``; PromQL sees the db.client metrics.

Needs the ``prometheus`` and ``promtool`` binaries (``scripts/ensure-prometheus.sh``
installs Debian's package): skipped without them, failed when ``CI=true``. The app runs
under uvicorn in its own process, on SQLite in the test's directory and on PostgreSQL
(when reachable, as elsewhere); Prometheus runs on a free port, scrapes every second and
evaluates the starter alerts of ``docs/prometheus-alerts.yml`` on the real series.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import require_server
from tests.proxy import free_port
from tests.servers import READY, ROOT, Server, start_server

APP = "example_app.app:app"
ALERTS = ROOT / "docs" / "prometheus-alerts.yml"
SCRAPE_CONFIG = ROOT / "docs" / "prometheus.yml"
ALERT_TESTS = ROOT / "tests" / "prometheus_alerts_test.yml"
POOL = "db_client_connection_pool_name"
STATE = "db_client_connection_state"
OPERATION_P99 = (
    "histogram_quantile(0.99, sum by (le) (rate(db_client_operation_duration_seconds_bucket[1m])))"
)
#: DatabasePoolSaturated's join, without its threshold
SATURATION = (
    f'sum by (job, instance, {POOL}) (db_client_connection_count{{{STATE}="used"}})'
    f" / on (job, instance, {POOL}) sum by (job, instance, {POOL}) (db_client_connection_max)"
)

T = TypeVar("T")
Sample = dict[str, Any]
"""One element of an instant query's ``result``: ``{"metric": {...}, "value": [t, "v"]}``."""


def _binary(name: str) -> str:
    binary = shutil.which(name) or f"/usr/bin/{name}"
    if not os.access(binary, os.X_OK):
        reason = f"{name} is not installed (scripts/ensure-prometheus.sh installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return binary


@dataclass
class Prometheus:
    api: httpx.Client
    log: Path

    def get(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful API answer."""
        body = self.api.get(path, params=params).json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[Sample]:
        result: list[Sample] = self.get("/api/v1/query", query=promql)["result"]
        return result

    def eventually(self, what: str, check: Callable[[], T | None], timeout: float = 20) -> T:
        """The first true result of ``check``, polled until ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"{what}: not within {timeout} s\n{self.log.read_text()[-3000:]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app(database: str, tmp_path: Path, servers: list[Server]) -> Iterator[Server]:
    """The example app under uvicorn, starting (``prometheus`` waits until it is ready)."""
    _binary("prometheus")  # skip before starting anything
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    else:
        url = require_server(database)
    server = start_server(tmp_path, APP, DB_URL=url)
    servers.append(server)  # killed by that fixture if stop() fails
    yield server
    server.stop()


@pytest.fixture
def prometheus(app: Server, tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus scraping ``app`` every second, with the starter alert rules loaded.

    Prometheus 2.x creates its scrape loops 5 s after startup at the earliest (its scrape
    manager reloads on a fixed 5 s tick), so the app starts meanwhile.
    """
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {ALERTS}
scrape_configs:
  - job_name: bento
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:{app.port}"]
"""
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                _binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:
            server = Prometheus(api, log)

            def ready() -> bool:
                assert process.poll() is None, log.read_text()
                try:
                    return api.get("/-/ready").status_code == 200
                except httpx.TransportError:
                    return False

            server.eventually("Prometheus ready", ready)
            app.wait_ready()
            yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _traffic(app: Server) -> None:
    """A write and a few reads: statements, checkouts, a commit."""
    with httpx.Client(timeout=10) as client:
        email = f"{uuid.uuid4().hex}@example.com"
        created = client.post(app.url("/api/v1/customers"), json={"name": "P", "email": email})
        assert created.status_code == 201, created.text
        for path in ("/api/v1/customers", "/api/v1/products", READY):
            assert client.get(app.url(path)).status_code == 200


def _value(sample: Sample) -> float:
    return float(sample["value"][1])


def test_prometheus_scrapes_db_client_metrics(
    database: str, app: Server, prometheus: Prometheus
) -> None:
    _traffic(app)

    def up() -> bool:
        targets = prometheus.get("/api/v1/targets")["activeTargets"]
        for target in targets:  # the app is ready: a failed scrape is final
            assert target["health"] != "down", f"{target['scrapeUrl']}: {target['lastError']}"
        return bool(targets) and all(t["health"] == "up" for t in targets)

    prometheus.eventually("the app's target up", up)
    counts = prometheus.eventually(
        "db_client_connection_count", lambda: prometheus.query("db_client_connection_count")
    )
    for sample in counts:
        assert sample["metric"].get(POOL), sample
        assert sample["metric"]["job"] == "bento", sample
    by_state = {
        s["metric"].get(STATE): _value(s)
        for s in prometheus.query(f"sum by ({STATE}) (db_client_connection_count)")
    }
    assert set(by_state) == {"idle", "used"}, by_state
    assert all(v >= 0 and v.is_integer() for v in by_state.values()), by_state

    buckets = prometheus.query("db_client_operation_duration_seconds_bucket")
    assert buckets, "no db_client_operation_duration_seconds_bucket series"
    assert "+Inf" in {s["metric"]["le"] for s in buckets}
    operations = prometheus.query("sum(db_client_operation_duration_seconds_count)")
    assert operations, "no db_client_operation_duration_seconds_count series"
    assert _value(operations[0]) > 0, operations
    assert prometheus.query("db_client_connection_wait_time_seconds_bucket")

    def p99() -> float | None:  # rate() needs two scrapes with statements between them
        _traffic(app)
        result = prometheus.query(OPERATION_P99)
        return _value(result[0]) if result and math.isfinite(_value(result[0])) else None

    assert prometheus.eventually("a finite p99 operation duration", p99) > 0

    if database != "sqlite":  # SQLite has no pool (NullPool): no max, no pool timeouts
        pools = {s["metric"][POOL] for s in counts}
        limits = prometheus.query("db_client_connection_max")
        assert {s["metric"].get(POOL) for s in limits} == pools, limits
        assert all(_value(s) > 0 for s in limits), limits
        timeouts = prometheus.query("db_client_connection_timeouts_total")
        assert {s["metric"].get(POOL) for s in timeouts} == pools, timeouts
        saturation = prometheus.query(SATURATION)
        assert {s["metric"][POOL] for s in saturation} == pools, saturation
        assert all(0 <= _value(s) <= 1 for s in saturation), saturation

    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules: list[dict[str, Any]] = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None

    rules = prometheus.eventually("the alert rules evaluated", rules_evaluated)
    assert {r["name"] for r in rules} == {
        "DatabasePoolSaturated",
        "DatabaseConnectionTimeouts",
        "DatabaseSlowQueries",
    }
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    assert not [a for r in rules for a in r["alerts"] if a["state"] == "firing"], rules


@pytest.mark.parametrize(
    "command",
    [
        ["check", "rules", str(ALERTS)],
        ["check", "config", str(SCRAPE_CONFIG)],
        ["test", "rules", str(ALERT_TESTS)],
    ],
    ids=["check-rules", "check-config", "test-rules"],
)
def test_alert_rules_and_scrape_config_are_valid(command: list[str]) -> None:
    """docs/prometheus-alerts.yml parses and fires as tests/prometheus_alerts_test.yml says."""
    done = subprocess.run(
        [_binary("promtool"), *command], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
