"""A poison message (a contact.created whose body is not the protobuf it claims) goes to the
gateway's dead-letter table after `max_deliver` attempts, while the events published behind it
flow past it: they are applied before its retries are exhausted, each delivered once."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import nats
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from chassis.events import OutgoingEvent
from chassis.testing import wait_for

BEHIND = 60

pytestmark = pytest.mark.timeout(300)


class TestPoisonMessage:
    async def test_dead_lettered_without_blocking_what_follows(self, stack: Any) -> None:
        poison = OutgoingEvent(
            message=StringValue(value="not a ContactCreated"),
            ce_type="crm.contacts.contact.created.v1",
            tenant=stack.tenant,
            aggregate_id=str(uuid.uuid4()),
            version=1,
            source="crm/contacts",
        )
        nc = await nats.connect(stack.infra.nats_url)
        try:
            # field 1, length 255, then nothing: no protobuf parser accepts it
            await nc.jetstream().publish(poison.subject, b"\x0a\xff", headers=poison.headers())
        finally:
            await nc.close()
        items = [
            {"external_ids": {"load": f"b{i}"}, "email": f"b{i}@example.com", "last_name": "B"}
            for i in range(BEHIND)
        ]
        async with httpx.AsyncClient(base_url=stack.contacts.url, timeout=60) as c:
            r = await c.post("/v1/contacts/batch", json={"items": items}, headers=stack.headers())
        assert r.status_code == 200, r.text

        await stack.converged()
        await stack.assert_exactly_once(foreign=1)

        async def dead_letters() -> list[Any]:
            rows = await stack.fetch(
                stack.gateway_db,
                "SELECT consumer, event_id, deliveries, created_at FROM dead_letters",
            )
            return rows if len(rows) == len(stack.durable_names) else []

        dead = await wait_for(dead_letters, timeout=90, interval=0.2, message="dead letters")
        assert {r["consumer"] for r in dead} == set(stack.durable_names)
        assert all(r["event_id"] == str(poison.id) for r in dead)
        assert all(r["deliveries"] == stack.max_deliver for r in dead)
        # not blocked: everything behind the poison was applied before it was given up on
        applied_by = await stack.fetch(
            stack.gateway_db, "SELECT consumer, max(processed_at) AS t FROM inbox GROUP BY consumer"
        )
        last = {r["consumer"]: r["t"] for r in applied_by}
        for r in dead:
            assert last[r["consumer"]] < r["created_at"], r["consumer"]
        assert (
            await stack.scalar(
                stack.gateway_db,
                "SELECT count(*) FROM customer_360 WHERE contact_id = $1",
                uuid.UUID(poison.aggregate_id),
            )
            == 0
        )
