"""Graceful shutdown: on SIGTERM (or SIGINT) drain, stop accepting, finish, exit.

1. `/readyz` answers 503 at once, while requests are still accepted for SHUTDOWN_DRAIN_S, so a
   load balancer takes the instance out of rotation before connections are refused.
2. uvicorn stops accepting and waits for the requests in progress (queued ones included).
3. At SHUTDOWN_GRACE_S after that, whatever is still decoding, queued or running is answered
   503 (`ModelNotReady`, by stopping the batchers), never cut off; then the process exits.
A second signal during the drain starts step 2 at once; a second SIGINT after it forces the exit.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from app.config import Settings
from app.connections import server_config
from app.dataplane import DataPlane

logger = logging.getLogger(__name__)


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, plane: DataPlane, drain_s: float, grace_s: float) -> None:
        super().__init__(config)
        self.plane = plane
        self.drain_s = drain_s
        self.grace_s = grace_s
        self._drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Runs in the signal handler: only set flags here."""
        self.plane.draining = True
        if self._drain_until is None and self.drain_s > 0 and not self.should_exit:
            self._drain_until = time.monotonic() + self.drain_s
            logger.info(
                "signal %d: /readyz answers 503; accepting requests for %.1f s more", sig, self.drain_s
            )
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        aborting: list[asyncio.Task[None]] = []
        timer = loop.call_later(self.grace_s, lambda: aborting.append(loop.create_task(self._abort())))
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()
            for task in aborting:
                await task

    async def _abort(self) -> None:
        waiting = sum(e.batcher.waiting_slots for e in self.plane.registry.entries.values() if e.batcher)
        logger.warning(
            "grace period of %.1f s over: %d queued images answered 503 (SHUTDOWN_GRACE_S)",
            self.grace_s,
            waiting,
        )
        # Requests still decoding or in a running batch: 503 now, not cut off by uvicorn's backstop.
        self.plane.abort_waiting()
        await self.plane.registry.close(abort_running=True)


def listen(settings: Settings) -> socket.socket:
    """The bound listening socket of HOST:PORT. Raises `OSError` (a taken port: `EADDRINUSE`).

    Bound before the app starts, so that a taken port stops the start before any model loads
    (uvicorn binds after the application's start-up, and then exited with status 3 and no hint).
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind((settings.host, settings.port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(app: FastAPI, settings: Settings, listener: socket.socket | None = None) -> None:
    """Run the app (made by `create_app(settings)`) until a signal, with the drain and grace above.

    `listener`: the socket from `listen(settings)`; without it uvicorn binds HOST:PORT itself.
    """
    config = server_config(app, settings)  # head deadline and size bound: app.connections
    plane: DataPlane = app.state.dataplane
    server = GracefulServer(config, plane, settings.shutdown_drain_s, settings.shutdown_grace_s)
    if listener is not None:  # uvicorn says where it listens only when it binds the socket itself
        host, port = listener.getsockname()[:2]
        logger.info("listening on http://%s:%d (Ctrl+C or SIGTERM to stop)", host, port)
    server.run(sockets=[listener] if listener is not None else None)
