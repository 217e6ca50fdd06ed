"""Run ``tests.server_app:app`` under uvicorn; exit 0 after a graceful SIGTERM shutdown.

uvicorn (>= 0.29) re-raises a captured SIGTERM once its graceful shutdown is done, so
the process would end by the signal (status 143). A no-op handler installed first
receives that echo instead, and the process exits normally.
"""

from __future__ import annotations

import signal
import sys

import uvicorn

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    uvicorn.run("tests.server_app:app", host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
