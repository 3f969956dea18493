"""What the campaigns service asks through events: consent withdrawn, lead qualified, lead
captured (one contact per email), tag requested."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from httpx import AsyncClient

from chassis.events import OutgoingEvent
from chassis.testing import Infra, wait_for
from crm.campaigns.v1 import campaigns_pb2 as pb
from crm.common.v1.common_pb2 import EventMeta
from crm.registry import ce_type_for


class Publisher:
    def __init__(self, js: Any) -> None:
        self.js = js

    async def send(self, msg: Any, aggregate_id: str, version: int = 1) -> None:
        msg.meta.CopyFrom(EventMeta(tenant_id="acme", aggregate_id=aggregate_id, version=version))
        ev = OutgoingEvent(
            message=msg,
            ce_type=ce_type_for(msg),
            tenant="acme",
            aggregate_id=aggregate_id,
            version=version,
            source="crm/campaigns",
        )
        await self.js.publish(ev.subject, msg.SerializeToString(), headers=ev.headers())


@pytest.fixture
async def campaigns(crm_infra: Infra, app: Any) -> AsyncIterator[Publisher]:
    nc = await nats.connect(crm_infra.nats_url)
    try:
        yield Publisher(nc.jetstream())
    finally:
        await nc.close()


async def get(client: AsyncClient, api: Any, cid: str) -> dict[str, Any]:
    r = await client.get(f"/v1/contacts/{cid}", headers=api.h())
    assert r.status_code == 200, r.text
    return dict(r.json())


class TestCampaignRequests:
    async def test_unsubscribe_denies_email_consent(
        self, client: AsyncClient, api: Any, campaigns: Publisher
    ) -> None:
        c = await api.contact(
            first_name="Ada",
            email="ada@example.com",
            consent={"email_marketing": "granted", "legal_basis": "consent"},
        )
        at = Timestamp()
        at.FromDatetime(datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
        await campaigns.send(
            pb.ConsentWithdrawn(contact_id=c["id"], channel="email_marketing", at=at), c["id"]
        )

        async def denied() -> dict[str, Any] | None:
            row = await get(client, api, c["id"])
            return row if row["consent"]["email_marketing"] == "denied" else None

        row = await wait_for(denied, message="consent denied")
        assert row["consent"]["legal_basis"] == "consent"
        assert row["version"] == c["version"] + 1

    async def test_lead_qualified_raises_lifecycle_only_when_lower(
        self, client: AsyncClient, api: Any, campaigns: Publisher
    ) -> None:
        lead = await api.contact(first_name="L", lifecycle_stage="lead")
        customer = await api.contact(first_name="C", lifecycle_stage="customer")
        await campaigns.send(
            pb.LeadQualified(contact_id=customer["id"], score="60"), customer["id"]
        )
        await campaigns.send(pb.LeadQualified(contact_id=lead["id"], score="60"), lead["id"])

        async def mql() -> bool:
            return (await get(client, api, lead["id"]))["lifecycle_stage"] == "mql"

        await wait_for(mql, message="lead became mql")
        # The customer event came first (same stream order): it was applied as a no-op.
        after = await get(client, api, customer["id"])
        assert after["lifecycle_stage"] == "customer"
        assert after["version"] == customer["version"]

    async def test_captured_leads_make_one_contact_per_email(
        self, client: AsyncClient, api: Any, campaigns: Publisher
    ) -> None:
        existing = await api.contact(first_name="Known", email="known@example.com")
        sends = [
            campaigns.send(
                pb.LeadCaptured(
                    email="New@Example.com" if i % 2 else "new@example.com",
                    channel="web_form",
                    first_name="Nina",
                    touchpoint_id=str(i),
                ),
                str(uuid.uuid4()),
            )
            for i in range(6)
        ]
        sends.append(
            campaigns.send(
                pb.LeadCaptured(email="known@example.com", channel="chat"), str(uuid.uuid4())
            )
        )
        await asyncio.gather(*sends)

        async def with_email(email: str) -> list[dict[str, Any]]:
            r = await client.get("/v1/contacts", params={"limit": 200}, headers=api.h())
            return [c for c in r.json()["items"] if c["email"] == email]

        await wait_for(lambda: with_email("new@example.com"), message="lead contact created")
        await asyncio.sleep(1.0)  # let every capture be handled
        items = await with_email("new@example.com")
        assert len(items) == 1
        assert items[0]["lifecycle_stage"] == "lead"
        assert items[0]["lead_source"] == "web_form"
        assert items[0]["first_name"] == "Nina"
        known = await with_email("known@example.com")
        assert [c["id"] for c in known] == [existing["id"]]

    async def test_tag_requested_is_added_once(
        self, client: AsyncClient, api: Any, campaigns: Publisher
    ) -> None:
        c = await api.contact(first_name="T", tags=["a"])
        await campaigns.send(pb.ContactTagRequested(contact_id=c["id"], tag="nurtured"), "r1")
        await campaigns.send(pb.ContactTagRequested(contact_id=c["id"], tag="nurtured"), "r2")

        async def tagged() -> dict[str, Any] | None:
            row = await get(client, api, c["id"])
            return row if "nurtured" in row["tags"] else None

        row = await wait_for(tagged, message="tag added")
        await asyncio.sleep(0.5)
        row = await get(client, api, c["id"])
        assert row["tags"] == ["a", "nurtured"]
        assert row["version"] == c["version"] + 1
