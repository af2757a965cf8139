"""The data plane's pool calls: `finished` runs once the thread is done, whatever the request did."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.config import Settings
from app.dataplane import DataPlane
from app.errors import DeadlineExceeded


def test_finished_is_called_when_the_work_ends_or_will_never_start() -> None:
    plane = DataPlane(Settings(decode_threads=1), registry=None)  # type: ignore[arg-type]
    gate = threading.Event()
    calls: list[tuple[str, float]] = []

    async def scenario() -> None:
        far = time.monotonic() + 10
        blocker = asyncio.ensure_future(plane._in_pool(far, gate.wait))  # holds the only thread
        unstarted = asyncio.ensure_future(
            plane._in_pool(far, lambda: None, finished=lambda: calls.append(("unstarted", time.monotonic())))
        )
        await asyncio.sleep(0.05)
        unstarted.cancel()  # the client went away before a thread took the work
        with pytest.raises(asyncio.CancelledError):
            await unstarted
        await asyncio.sleep(0.05)
        assert [name for name, _ in calls] == ["unstarted"]
        gate.set()
        await blocker
        # The request gives up at its deadline; the thread runs on, and only its end calls back.
        with pytest.raises(DeadlineExceeded):
            await plane._in_pool(
                time.monotonic() + 0.05,
                time.sleep,
                0.3,
                finished=lambda: calls.append(("slow", time.monotonic())),
            )
        gave_up = time.monotonic()
        assert len(calls) == 1
        await asyncio.sleep(0.5)
        assert [name for name, _ in calls] == ["unstarted", "slow"]
        assert calls[1][1] - gave_up > 0.15

    try:
        asyncio.run(scenario())
    finally:
        plane.close()
