"""The pipeline's sections of the 360: deals, orders, open tasks, sales metrics and timeline
entries, whatever the order in which contact and pipeline events arrive."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from httpx import AsyncClient

from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.testing import Infra, wait_for
from crm.common.v1.common_pb2 import Money
from crm.pipeline.v1 import pipeline_pb2 as pb
from gateway.outgoing import outgoing_event

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def ts(t: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(t)
    return out


def pipeline_event(msg: Any, tenant: str, aggregate_id: str, version: int) -> OutgoingEvent:
    return outgoing_event(
        msg,
        tenant=tenant,
        aggregate_id=aggregate_id,
        version=version,
        source="crm/pipeline",
        occurred_at=T0 + timedelta(minutes=version),
        actor="u-rep1",
    )


def deal(did: str, contact_id: str, version: int, **fields: Any) -> pb.Deal:
    values: dict[str, Any] = {
        "name": "Acme renewal",
        "owner_id": "u-rep1",
        "pipeline_id": "p1",
        "stage_id": "s1",
        "stage_name": "Qualify",
        "amount": Money(amount="10000.00", currency="USD"),
        "status": "open",
        "created_at": ts(T0),
    }
    values.update(fields)
    return pb.Deal(id=did, contact_id=contact_id, version=version, **values)


async def timeline_kinds(client: AsyncClient, infra: Infra, cid: str) -> list[str]:
    r = await client.get(f"/v1/customers/{cid}/timeline", headers=infra.auth())
    assert r.status_code == 200, r.text
    return [e["kind"] for e in r.json()["items"]]


class TestPipelineSections:
    async def test_deal_before_contact_then_won_order_task_activity(
        self,
        client: AsyncClient,
        events: Any,
        read_360: Callable[..., Any],
        new_id: Callable[[], str],
        crm_infra: Infra,
    ) -> None:
        cid, did, oid, tid, aid = new_id(), new_id(), new_id(), new_id(), new_id()
        # The deal arrives before the contact it belongs to.
        await events.publish(pipeline_event(pb.DealCreated(deal=deal(did, cid, 1)), "acme", did, 1))
        await events.publish(events.contact_created("acme", cid))
        r = await read_360(cid, until=lambda d: len(d["deals"]) == 1)
        doc = r.json()
        assert doc["deals"][0]["id"] == did
        assert doc["deals"][0]["stage_name"] == "Qualify"
        assert doc["metrics"]["open_deals"] == 1
        assert doc["metrics"]["lifetime_value"] == []
        assert doc["versions"] == {"contact": 1}
        # The contact's later events apply to a document born from a pending row.
        await events.publish(events.contact_updated("acme", cid, 2, ["first_name"], first_name="A"))
        r = await read_360(cid, until=lambda d: d["versions"]["contact"] == 2)
        assert r.json()["contact"]["first_name"] == "A"
        assert r.json()["deals"][0]["id"] == did
        etag = r.headers["etag"]

        won = deal(did, cid, 2, status="won", stage_id="s9", stage_name="Won", closed_at=ts(T0))
        await events.publish(
            pipeline_event(pb.DealWon(deal=won, from_stage_id="s1"), "acme", did, 2)
        )
        r = await read_360(cid, until=lambda d: d["deals"][0]["status"] == "won")
        assert r.headers["etag"] != etag
        assert r.json()["metrics"]["lifetime_value"] == [{"currency": "USD", "amount": "10000.00"}]

        # An order fulfilling the deal is counted once; another paid order adds up.
        order = pb.Order(
            id=oid,
            contact_id=cid,
            deal_id=did,
            number="SO-1",
            amount=Money(amount="10000.00", currency="USD"),
            status="paid",
            ordered_at=ts(T0),
            paid_at=ts(T0),
        )
        await events.publish(pipeline_event(pb.OrderPaid(order=order), "acme", oid, 1))
        other = new_id()
        order2 = pb.Order(
            id=other,
            contact_id=cid,
            amount=Money(amount="250.50", currency="USD"),
            status="paid",
            ordered_at=ts(T0 + timedelta(days=1)),
        )
        await events.publish(pipeline_event(pb.OrderUpserted(order=order2), "acme", other, 1))
        r = await read_360(cid, until=lambda d: len(d["orders"]) == 2)
        doc = r.json()
        assert [o["id"] for o in doc["orders"]] == [other, oid]  # newest first
        assert doc["metrics"]["lifetime_value"] == [{"currency": "USD", "amount": "10250.50"}]

        task = pb.Task(id=tid, title="Call back", status="open", contact_id=cid, priority="high")
        await events.publish(pipeline_event(pb.TaskCreated(task=task), "acme", tid, 1))
        activity = pb.Activity(
            id=aid, type="call", subject="Intro", contact_id=cid, occurred_at=ts(T0)
        )
        await events.publish(pipeline_event(pb.ActivityLogged(activity=activity), "acme", aid, 1))
        r = await read_360(
            cid, until=lambda d: d["metrics"].get("last_activity") is not None and d["tasks"]
        )
        doc = r.json()
        assert doc["tasks"][0]["title"] == "Call back"
        assert doc["metrics"]["open_tasks"] == 1
        assert doc["metrics"]["last_activity"]["type"] == "call"

        done = pb.Task(id=tid, title="Call back", status="done", contact_id=cid, priority="high")
        await events.publish(pipeline_event(pb.TaskUpdated(task=done), "acme", tid, 2))
        await read_360(cid, until=lambda d: d["tasks"] == [] and d["metrics"]["open_tasks"] == 0)

        kinds = await timeline_kinds(client, crm_infra, cid)
        for kind in ("deal.created", "deal.won", "order.paid", "order.upserted", "activity.call"):
            assert kind in kinds

        # types= patterns and since= narrow the timeline.
        r = await client.get(
            f"/v1/customers/{cid}/timeline",
            params={"types": "deal.*,order.paid"},
            headers=crm_infra.auth(),
        )
        picked = [e["kind"] for e in r.json()["items"]]
        assert set(picked) == {"deal.created", "deal.won", "order.paid"}
        r = await client.get(
            f"/v1/customers/{cid}/timeline",
            params={"types": "deal.*", "since": "2026-11-20T10:02:00Z"},
            headers=crm_infra.auth(),
        )
        assert [e["kind"] for e in r.json()["items"]] == ["deal.won"]
        r = await client.get(
            f"/v1/customers/{cid}/timeline",
            params={"since": "2026-11-20"},
            headers=crm_infra.auth(),
        )
        assert r.status_code == 422

    async def test_deal_moves_between_customers_and_is_deleted(
        self,
        events: Any,
        read_360: Callable[..., Any],
        new_id: Callable[[], str],
    ) -> None:
        a, b, did = new_id(), new_id(), new_id()
        await events.publish(events.contact_created("acme", a), events.contact_created("acme", b))
        await events.publish(pipeline_event(pb.DealCreated(deal=deal(did, a, 1)), "acme", did, 1))
        await read_360(a, until=lambda d: len(d["deals"]) == 1)
        moved = pb.DealUpdated(deal=deal(did, b, 2))
        moved.meta.changed_fields.append("contact_id")
        await events.publish(pipeline_event(moved, "acme", did, 2))
        await read_360(b, until=lambda d: len(d["deals"]) == 1)
        await read_360(a, until=lambda d: d["deals"] == [] and d["metrics"]["open_deals"] == 0)
        # A redelivered older version changes nothing.
        await events.publish(
            pipeline_event(pb.DealCreated(deal=deal(did, a, 1)), "acme", did, 1), msg_id="again"
        )
        await events.publish(pipeline_event(pb.DealDeleted(deal=deal(did, b, 3)), "acme", did, 3))
        await read_360(b, until=lambda d: d["deals"] == [])
        doc = (await read_360(a)).json()
        assert doc["deals"] == []


def ticket(tid: str, contact_id: str, version: int, status: str = "open") -> Any:
    from crm.tickets.v1 import tickets_pb2 as tpb

    return tpb.Ticket(
        id=tid,
        subject="Cannot log in",
        status=status,
        priority="urgent",
        requester_contact_id=contact_id,
        version=version,
        created_at=ts(T0),
        sla=[tpb.SlaClock(id="c1", metric="first_response", due_at=ts(T0), breached=True)],
    )


class TestTicketSections:
    async def test_tickets_breaches_surveys_follow_merge_and_erasure(
        self,
        client: AsyncClient,
        events: Any,
        read_360: Callable[..., Any],
        new_id: Callable[[], str],
        crm_infra: Infra,
        db_url: str,
    ) -> None:
        from crm.tickets.v1 import tickets_pb2 as tpb

        survivor, loser, t1, t2 = new_id(), new_id(), new_id(), new_id()
        await events.publish(
            events.contact_created("acme", survivor), events.contact_created("acme", loser)
        )
        await events.publish(
            pipeline_event(tpb.TicketCreated(ticket=ticket(t1, survivor, 1)), "acme", t1, 1),
            pipeline_event(tpb.TicketCreated(ticket=ticket(t2, loser, 1)), "acme", t2, 1),
            pipeline_event(
                tpb.TicketSolved(ticket=ticket(t2, loser, 2, "solved"), from_status="open"),
                "acme",
                t2,
                2,
            ),
            pipeline_event(
                tpb.SlaBreached(
                    clock=tpb.SlaClockRef(
                        ticket_id=t1,
                        metric="first_response",
                        due_at=ts(datetime.now(UTC)),
                        requester_contact_id=survivor,
                    )
                ),
                "acme",
                "c1",
                1,
            ),
            pipeline_event(
                tpb.CsatAnswered(ticket_id=t2, contact_id=loser, score=4, answered_at=ts(T0)),
                "acme",
                "s1",
                1,
            ),
            pipeline_event(
                tpb.NpsAnswered(contact_id=survivor, score=9, category="promoter"),
                "acme",
                "n1",
                1,
            ),
        )
        doc = (
            await read_360(
                survivor,
                until=lambda d: (
                    d["metrics"].get("nps") is not None and d["metrics"].get("sla_breaches") == 1
                ),
            )
        ).json()
        assert [t["id"] for t in doc["tickets"]] == [t1]
        assert doc["tickets"][0]["sla"]["first_response"]["breached"] is True
        assert doc["metrics"]["open_tickets"] == 1
        assert doc["metrics"]["sla_breaches_90d"] == 1
        assert doc["metrics"]["nps"]["category"] == "promoter"
        await read_360(loser, until=lambda d: d["metrics"].get("last_csat") is not None)

        # Merge: the loser's solved ticket and CSAT answer now belong to the survivor.
        await events.publish(events.contact_merged("acme", survivor, 2, [loser]))
        doc = (
            await read_360(survivor, until=lambda d: d["metrics"].get("last_csat") is not None)
        ).json()
        assert doc["metrics"]["last_csat"]["score"] == 4
        assert {t["id"] for t in doc["tickets"]} == {t1, t2}
        kinds = await timeline_kinds(client, crm_infra, survivor)
        assert {"ticket.created", "ticket.solved", "csat.answered", "nps.answered"} <= set(kinds)

        # Erasure: nothing stays attached to the customer.
        await events.publish(events.contact_erased("acme", survivor, 3))

        async def purged() -> bool:
            conn = await asyncpg.connect(asyncpg_dsn(db_url))
            try:
                n = await conn.fetchval(
                    "SELECT count(*) FROM rm_items WHERE contact_id = $1", uuid.UUID(survivor)
                )
            finally:
                await conn.close()
            return n == 0

        await wait_for(purged, message="items of the erased customer purged")


class TestCampaignSections:
    async def test_emails_scores_loyalty_and_sequences(
        self,
        client: AsyncClient,
        events: Any,
        read_360: Callable[..., Any],
        new_id: Callable[[], str],
        crm_infra: Infra,
    ) -> None:
        from crm.campaigns.v1 import campaigns_pb2 as cpb

        cid, mail, member, enrollment = new_id(), new_id(), new_id(), new_id()
        await events.publish(events.contact_created("acme", cid))

        def email(version: int) -> Any:
            return cpb.Email(
                id=mail, campaign_id="camp-1", contact_id=cid, subject="Welcome", status="sent",
                version=version,
            )  # fmt: skip

        def loyalty(version: int, balance: int, tier: str) -> Any:
            return cpb.LoyaltyMember(
                id=member, program_id="prog-1", contact_id=cid, balance=balance, tier=tier,
                points_365d=balance, version=version,
            )  # fmt: skip

        await events.publish(
            pipeline_event(cpb.EmailSent(email=email(1)), "acme", mail, 1),
            pipeline_event(cpb.EmailOpened(email=email(2), first=True), "acme", mail, 2),
            pipeline_event(cpb.EmailOpened(email=email(3), first=False), "acme", mail, 3),
            pipeline_event(
                cpb.LeadScoreChanged(contact_id=cid, model_id="m1", model="Fit", score="12.5"),
                "acme",
                cid,
                1,
            ),
            pipeline_event(
                cpb.LeadScoreChanged(contact_id=cid, model_id="m2", model="Activity", score="40"),
                "acme",
                cid,
                2,
            ),
            pipeline_event(
                cpb.PointsEarned(
                    member=loyalty(1, 6000, "Silver"),
                    entry=cpb.LedgerEntry(kind="earn", points=6000),
                ),
                "acme",
                member,
                1,
            ),
            pipeline_event(
                cpb.TierChanged(member=loyalty(2, 6000, "Gold"), previous_tier="Silver"),
                "acme",
                member,
                2,
            ),
            pipeline_event(
                cpb.EnrollmentChanged(
                    change="enrolled",
                    enrollment=cpb.Enrollment(
                        id=enrollment, sequence_id="seq-1", contact_id=cid, step=0, status="active"
                    ),
                ),
                "acme",
                enrollment,
                1,
            ),
        )
        await events.publish(
            pipeline_event(
                cpb.ContactSegmentsChanged(
                    contact_id=cid,
                    segments=[cpb.SegmentRef(id="seg-1", name="VIP", type="dynamic")],
                ),
                "acme",
                cid,
                1,
            )
        )
        doc = (
            await read_360(
                cid,
                until=lambda d: (
                    d["segments"]
                    and d["loyalty"] is not None
                    and d["loyalty"]["tier"] == "Gold"
                    and d["sequences"]
                    and len(d["metrics"].get("lead_scores", [])) == 2
                    and d["campaigns"]
                    and d["campaigns"][0]["opened"]
                ),
            )
        ).json()
        assert doc["loyalty"]["balance"] == 6000
        assert doc["segments"] == [{"id": "seg-1", "name": "VIP", "type": "dynamic"}]
        assert [s["model"] for s in doc["metrics"]["lead_scores"]] == ["Activity", "Fit"]
        assert doc["metrics"]["email_engagement"] == {"sent": 1, "opened": 1, "clicked": 0}
        assert doc["campaigns"][0]["clicked"] is False
        assert doc["sequences"][0]["status"] == "active"
        kinds = await timeline_kinds(client, crm_infra, cid)
        assert kinds.count("email.opened") == 1  # only the first open
        assert {"email.sent", "loyalty.earned", "loyalty.tier_changed", "sequence.enrolled"} <= set(
            kinds
        )
