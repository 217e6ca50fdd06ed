"""``python -m example_app``: serve on 127.0.0.1:8089 (``HOST``, ``PORT`` to change)."""

from __future__ import annotations

import os
import signal

import uvicorn


def serve(app: str, host: str, port: int) -> None:
    """Run ``app`` under uvicorn; exit 0 after a graceful SIGTERM shutdown.

    uvicorn (>= 0.29) re-raises a captured SIGTERM once its graceful shutdown is done;
    the no-op handler installed first receives that echo, so the process exits normally.
    """
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    uvicorn.run(app, host=host, port=port, log_level=os.environ.get("LOG_LEVEL", "info"))


if __name__ == "__main__":
    serve(
        "example_app.app:app",
        os.environ.get("HOST", "127.0.0.1"),
        int(os.environ.get("PORT", "8089")),
    )
