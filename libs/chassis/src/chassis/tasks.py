"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[None], timeout: float = 5.0) -> None:
    """Cancel `task` until it is done. On Python 3.11 `asyncio.wait_for` (used by asyncpg and
    nats-py internally too) can swallow a cancellation that races with its timeout
    (cpython gh-86296), so a single `cancel()` is not enough."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
