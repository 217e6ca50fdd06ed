"""A TCP proxy the tests switch off and on, or stall, standing in for a database going away.

``off()`` refuses connections and cuts the open ones (a server that is down);
``stall()`` keeps every connection open but forwards nothing, so bytes vanish as on a
broken network path (no FIN, no RST); ``on()`` forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to a target while on; refuses connections while off.

    Runs its own event loop in a thread, so tests of any kind can drive it.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.stalled = False
        """While set, bytes are read and dropped in both directions."""
        self.round_trips = 0
        """Client-to-server bursts that follow a server reply (or open a connection): what
        a client waits for, summed over all connections."""

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        last: list[str],
        side: str,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if self.stalled:
                    continue  # lost on the way: the peer never learns
                if side == "client" and last[0] != "client":
                    self.round_trips += 1
                last[0] = side
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # known at once, so that off() cuts it even while the target is being dialled
        # (else its transport outlives the proxy's loop: a ResourceWarning in a later test)
        self._writers.add(client_w)
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(client_w)
            client_w.close()
            return
        self._writers.add(server_w)
        last = ["server"]  # who sent the previous burst on this connection
        await asyncio.gather(
            self._pipe(client_r, server_w, last, "client"),
            self._pipe(server_r, client_w, last, "server"),
        )
        self._writers.difference_update((client_w, server_w))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        # cut every connection and let every handler end (cancelled after 2 s) before the
        # loop may stop: a task or transport left behind is a ResourceWarning in a later
        # test. This loop is the proxy's own: its other tasks are all handlers, those of
        # connections accepted just before the close too (not started yet, not in
        # _writers): hence the rounds, until two in a row find nothing left
        current = asyncio.current_task()
        quiet = 0
        for _ in range(20):
            await asyncio.sleep(0.01)  # callbacks in flight (an accept) make their tasks
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
            others = asyncio.all_tasks() - {current}
            if not others:
                quiet += 1
                if quiet == 2:
                    break
                continue
            quiet = 0
            _, pending = await asyncio.wait(others, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def on(self) -> None:
        """Accept and forward connections."""
        self.stalled = False
        if self._server is None:
            self._call(self._start())

    def stall(self) -> None:
        """Keep connections open (and accept new ones) but forward nothing."""
        self.stalled = True

    def off(self) -> None:
        """Refuse new connections and cut the open ones."""
        self._call(self._stop())

    def close(self) -> None:
        """Stop the proxy and its thread."""
        self.off()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
