"""SIGSTOP one of two gateway replicas past the consumers' ack wait, then SIGCONT it: the
messages it held are redelivered to the other replica and applied there, and when the frozen
one wakes up and finishes its stale batch, the inbox makes that a no-op."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from chassis.testing import wait_for

# A freeze that happens to find the replica holding nothing proves nothing: try again.
ATTEMPTS = 3

pytestmark = pytest.mark.timeout(400)  # process starts take ~25 s on a loaded 2-core box


class TestConsumerFrozenPastAckWait:
    async def test_held_messages_go_to_the_other_replica_and_apply_once(self, stack: Any) -> None:
        replica = stack.add_gateway("gateway-b")
        replica.start()
        await replica.ready()
        load = stack.load()
        load.start()
        frozen = stack.gateway
        redelivered_while_frozen = 0
        for _ in range(ATTEMPTS):
            await wait_for(lambda: _applied(stack, 100), timeout=60, message="events flowing")
            before = await _redeliveries(stack)
            frozen.pause()
            try:
                # well past the ack wait: the broker hands what the frozen replica holds to
                # the other one
                await wait_for(
                    partial(_redelivered_since, stack, before),
                    timeout=stack.ack_wait_seconds * 5,
                    interval=0.2,
                    message="redelivery while frozen",
                )
                redelivered_while_frozen = await _redeliveries(stack) - before
            except AssertionError:
                continue  # it held nothing when it stopped
            finally:
                frozen.resume()
            break
        await load.stop()
        await stack.converged()
        events = await stack.assert_exactly_once()
        print(f"\nredelivered while frozen {redelivered_while_frozen}; events {events}")
        assert redelivered_while_frozen > 0


async def _applied(stack: Any, n: int) -> bool:
    return bool(await stack.scalar(stack.gateway_db, "SELECT count(*) FROM event_log") >= n)


async def _redeliveries(stack: Any) -> int:
    return sum(d.redeliveries for d in await stack.durables())


async def _redelivered_since(stack: Any, before: int) -> bool:
    return await _redeliveries(stack) > before
