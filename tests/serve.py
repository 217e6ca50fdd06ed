"""Run a test app (default ``tests.server_app:app``) under uvicorn on the given port.

Exits 0 after SIGTERM.
"""

from __future__ import annotations

import sys

from example_app.__main__ import serve

if __name__ == "__main__":
    app = sys.argv[2] if len(sys.argv) > 2 else "tests.server_app:app"
    serve(app, "127.0.0.1", int(sys.argv[1]))
