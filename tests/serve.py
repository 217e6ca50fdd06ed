"""Run ``tests.server_app:app`` under uvicorn on the given port, exiting 0 after SIGTERM."""

from __future__ import annotations

import sys

from example_app.__main__ import serve

if __name__ == "__main__":
    serve("tests.server_app:app", "127.0.0.1", int(sys.argv[1]))
