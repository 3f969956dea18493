"""A consumer process dies (here: freezes) holding version 1 of a contact, unacknowledged;
version 2 then reaches a live consumer process first. JetStream hands version 1 out again only
when its ack wait has passed, so version 2 must wait at least that long for it: dead-lettering
it sooner loses it, and every later version of the contact too (each is a gap behind the lost
one). The chassis's ack wait (30 s) is longer than its retries of a gap used to last (22.6 s
with max_deliver 8); here 15 s against 12.6 s (max_deliver 7) shows the same, faster."""

from __future__ import annotations

from typing import Any

import httpx
import nats
import pytest

from chassis.testing import wait_for

ACK_WAIT = 15.0

pytestmark = pytest.mark.timeout(400)


class TestGapBehindAnEventInFlight:
    async def test_later_version_waits_for_the_redelivery(self, stack: Any) -> None:
        await stack.set_ack_wait(ACK_WAIT)
        # Stop the gateway and let its pull requests lapse, so the next event goes to us.
        stack.gateway.pause()
        try:
            await wait_for(lambda: _no_waiting_pulls(stack), timeout=30, message="pulls lapsed")
            async with httpx.AsyncClient(base_url=stack.contacts.url, timeout=30) as c:
                r = await c.post(
                    "/v1/contacts",
                    json={"first_name": "In", "last_name": "Flight"},
                    headers=stack.headers(),
                )
                assert r.status_code == 201, r.text
                contact_id = r.json()["id"]
                nc = await nats.connect(stack.infra.nats_url)
                try:
                    # the "dying consumer": takes version 1 from every durable, never acks it
                    js = nc.jetstream()
                    for durable in stack.durable_names:
                        sub = await js.pull_subscribe_bind(durable, stream=stack.stream)
                        held = await sub.fetch(1, timeout=30)
                        assert (held[0].headers or {}).get("ce-sequence") == "1"
                    r = await c.patch(
                        f"/v1/contacts/{contact_id}",
                        json={"last_name": "Landed"},
                        headers={**stack.headers(), "If-Match": '"1"'},
                    )
                    assert r.status_code == 200, r.text
                finally:
                    await nc.close()
        finally:
            stack.gateway.resume()

        # version 2 reaches the gateway now; version 1 only after the ack wait
        async def landed() -> bool:
            rows = await stack.fetch(
                stack.gateway_db,
                "SELECT contact_version FROM customer_360 WHERE contact_id = CAST($1 AS uuid)",
                contact_id,
            )
            return bool(rows and rows[0]["contact_version"] == 2)

        await wait_for(landed, timeout=ACK_WAIT * 8, interval=0.5, message="version 2")
        assert await stack.scalar(stack.gateway_db, "SELECT count(*) FROM dead_letters") == 0
        await stack.converged()
        await stack.assert_exactly_once()


async def _no_waiting_pulls(stack: Any) -> bool:
    return all(d.waiting == 0 for d in await stack.durables())
