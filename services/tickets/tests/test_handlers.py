"""Consumers of contacts events: merged re-points tickets, erased purges personal data,
custom field definitions for tickets are replicated and then validate ticket writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from httpx import AsyncClient

from chassis.events import OutgoingEvent
from chassis.testing import Infra, wait_for
from crm.common.v1.common_pb2 import EventMeta
from crm.contacts.v1 import contacts_pb2 as cpb
from crm.registry import ce_type_for


async def publish(infra: Infra, msg: Message, aggregate_id: str, version: int) -> None:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC))
    msg.meta.CopyFrom(  # type: ignore[attr-defined]
        EventMeta(tenant_id="acme", aggregate_id=aggregate_id, version=version, occurred_at=ts)
    )
    ev = OutgoingEvent(
        message=msg,
        ce_type=ce_type_for(msg),
        tenant="acme",
        aggregate_id=aggregate_id,
        version=version,
        source="crm/contacts",
    )
    nc = await nats.connect(infra.nats_url)
    try:
        await nc.jetstream().publish(ev.subject, msg.SerializeToString(), headers=ev.headers())
    finally:
        await nc.close()


class TestContactsEvents:
    async def test_merge_and_erase(
        self, client: AsyncClient, admin: dict[str, str], crm_infra: Infra, db: asyncpg.Connection
    ) -> None:
        loser, survivor = str(uuid.uuid4()), str(uuid.uuid4())
        t = (
            await client.post(
                "/v1/tickets",
                json={
                    "subject": "Jane's issue",
                    "description": "Jane Doe, +1 555",
                    "requester_contact_id": loser,
                },
                headers=admin,
            )
        ).json()
        await client.post(
            f"/v1/tickets/{t['id']}/comments",
            json={"body": "my address is X", "author": "requester"},
            headers=admin,
        )
        await publish(
            crm_infra, cpb.ContactMerged(survivor_id=survivor, merged_ids=[loser]), survivor, 1
        )

        async def moved() -> Any:
            r = (await client.get(f"/v1/tickets/{t['id']}", headers=admin)).json()
            return r if r["requester_contact_id"] == survivor else None

        moved_ticket = await wait_for(moved, timeout=15, message="ticket re-pointed")
        assert moved_ticket["version"] == t["version"] + 2  # comment + merge
        await publish(crm_infra, cpb.ContactErased(), survivor, 2)

        async def erased() -> Any:
            r = (await client.get(f"/v1/tickets/{t['id']}", headers=admin)).json()
            return r if r["description"] == "" else None

        e = await wait_for(erased, timeout=15, message="ticket erased")
        assert e["subject"] == "[erased]"
        assert await db.fetchval("SELECT count(*) FROM ticket_comments WHERE body <> ''") == 0
        types = await db.fetch(
            "SELECT ce_type, aggregate_version FROM outbox WHERE aggregate_id = $1 ORDER BY 2",
            t["id"],
        )
        assert [r[0] for r in types][-2:] == ["crm.tickets.ticket.updated.v1"] * 2

    async def test_custom_field_replica(
        self, client: AsyncClient, admin: dict[str, str], crm_infra: Infra
    ) -> None:
        fid = str(uuid.uuid4())
        definition = cpb.CustomFieldDefinition(
            object_type="ticket",
            key="severity",
            label="Severity",
            type="enum",
            options=["s1", "s2"],
            version=1,
        )
        await publish(crm_infra, cpb.CustomFieldDefined(definition=definition), fid, 1)

        async def accepted() -> bool:
            r = await client.post(
                "/v1/tickets",
                json={"subject": "x", "custom_fields": {"severity": "s1"}},
                headers=admin,
            )
            return r.status_code == 201

        await wait_for(accepted, timeout=15, message="definition replicated")
        r = await client.post(
            "/v1/tickets", json={"subject": "x", "custom_fields": {"severity": "s9"}}, headers=admin
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["custom_fields", "severity"]

    async def test_contact_deleted_unlinks_tickets(
        self, client: AsyncClient, admin: dict[str, str], crm_infra: Infra
    ) -> None:
        contact = str(uuid.uuid4())
        t = (
            await client.post(
                "/v1/tickets",
                json={
                    "subject": "Issue",
                    "description": "keep me",
                    "requester_contact_id": contact,
                },
                headers=admin,
            )
        ).json()
        other = (await client.post("/v1/tickets", json={"subject": "Other"}, headers=admin)).json()
        await publish(crm_infra, cpb.ContactDeleted(), contact, 1)

        async def unlinked() -> Any:
            r = (await client.get(f"/v1/tickets/{t['id']}", headers=admin)).json()
            return r if r["requester_contact_id"] is None else None

        r = await wait_for(unlinked, timeout=15, message="ticket unlinked")
        assert r["description"] == "keep me"
        assert r["version"] == 2
        again = (await client.get(f"/v1/tickets/{other['id']}", headers=admin)).json()
        assert again["version"] == 1
