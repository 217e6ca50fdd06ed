"""Run test apps under uvicorn in their own process, and wait for them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.proxy import free_port

ROOT = Path(__file__).parent.parent
READY = "/api/v1/common/health/readiness"
LIVE = "/api/v1/common/health/liveness"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    started: float
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _poll(self, path: str, done: Callable[[httpx.Response], bool], timeout: float) -> float:
        """Seconds from process start until ``done(response)`` holds for ``path``."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.output()
                try:
                    if done(client.get(self.url(path))):
                        return time.monotonic() - self.started
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
        raise AssertionError(f"{path}: no answer within {timeout} s:\n{self.output()}")

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Seconds from process start to the first readiness 200."""
        return self._poll(READY, lambda r: r.status_code == 200, timeout)

    def wait_listening(self, timeout: float = 20.0) -> None:
        """Until the server answers at all (liveness)."""
        self._poll(LIVE, lambda r: True, timeout)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_server(tmp_path: Path, app: str = "tests.server_app:app", **env: str) -> Server:
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    started = time.monotonic()
    with log.open("wb") as sink:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.serve", str(port), app],
            stdout=sink, stderr=subprocess.STDOUT, env=environment, cwd=ROOT,
        )  # fmt: skip
    return Server(process, port, started, log)
