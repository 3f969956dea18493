"""SIGKILL the gateway (the consumer of contacts' events) while it holds delivered but
unacknowledged messages, and restart it: JetStream redelivers them, the inbox makes the
second delivery a no-op, and nothing is lost."""

from __future__ import annotations

from typing import Any

import pytest

from chassis.testing import wait_for

# A kill that happens to find the gateway between batches proves nothing: try again.
ATTEMPTS = 3

pytestmark = pytest.mark.timeout(400)  # process starts take ~25 s on a loaded 2-core box


class TestConsumerKilledMidBatch:
    async def test_redelivered_events_apply_once(self, stack: Any) -> None:
        load = stack.load()
        load.start()
        pending_at_kill: list[int] = []
        for _ in range(ATTEMPTS):
            await wait_for(
                lambda: _holding_messages(stack), timeout=60, message="gateway mid-batch"
            )
            stack.gateway.kill()
            # nothing acks any more: what is pending now was in the dead process's hands
            pending_at_kill.append(sum(d.ack_pending for d in await stack.durables()))
            if pending_at_kill[-1] > 0:
                break
            await stack.gateway.restart()
        await load.stop()
        if stack.gateway.proc is None:
            await stack.gateway.restart()
        await stack.converged()
        events = await stack.assert_exactly_once()
        redelivered = sum(d.redeliveries for d in await stack.durables())
        print(f"\npending at kill {pending_at_kill}; redeliveries {redelivered}; events {events}")
        assert sum(pending_at_kill) > 0, "no kill hit the gateway mid-batch"
        assert redelivered > 0


async def _holding_messages(stack: Any) -> bool:
    return any(d.ack_pending > 0 for d in await stack.durables())
