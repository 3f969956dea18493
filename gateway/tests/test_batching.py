"""The section consumers apply a run of events at once (`on_many`): whatever the runs, the
documents, items and timelines are those of applying the same events one by one."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from chassis.consumer import ConsumerRunner
from chassis.db import Database, unit_of_work
from chassis.events import IncomingEvent, OutgoingEvent
from crm.campaigns.v1 import campaigns_pb2 as cpb
from crm.common.v1.common_pb2 import EventMeta, Money
from crm.contacts.v1 import contacts_pb2 as kpb
from crm.pipeline.v1 import pipeline_pb2 as ppb
from crm.registry import ce_type_for
from crm.tickets.v1 import tickets_pb2 as tpb
from gateway.readmodel.sections import campaigns, contacts, pipeline, tickets

NOW = datetime.now(UTC).replace(microsecond=0)


def incoming(msg: Any, tenant: str, aggregate_id: str, version: int, at: int) -> IncomingEvent:
    """The event as a consumer receives it (a new event id each time)."""
    msg.meta.CopyFrom(
        EventMeta(tenant_id=tenant, aggregate_id=aggregate_id, version=version, actor="u1")
    )
    msg.meta.occurred_at.FromDatetime(NOW - timedelta(hours=100 - at))
    out = OutgoingEvent(
        message=msg,
        ce_type=ce_type_for(msg),
        tenant=tenant,
        aggregate_id=aggregate_id,
        version=version,
        source="crm/test",
    )
    return IncomingEvent.from_nats(out.subject, out.headers(), msg.SerializeToString())


class Ids:
    """Customers and items of one tenant (the chassis' positions are per aggregate id, so
    each tenant has its own ids; `same` maps them onto another tenant's to compare)."""

    def __init__(self) -> None:
        self.a, self.b, self.c = (str(uuid.uuid4()) for _ in range(3))
        self.d1, self.d2, self.d3, self.o1, self.t1 = (str(uuid.uuid4()) for _ in range(5))
        self.k1, self.e1 = str(uuid.uuid4()), str(uuid.uuid4())

    def same(self, other: Ids, state: dict[str, Any]) -> dict[str, Any]:
        """`state` with this tenant's ids written as `other`'s."""
        text = json.dumps(state, sort_keys=True, default=str)
        for name, value in vars(self).items():
            text = text.replace(value, getattr(other, name))
        out: dict[str, Any] = json.loads(text)
        return out


def deal(ids: Ids, tenant: str, cls: Any, did: str, cid: str, v: int, **f: Any) -> IncomingEvent:
    d = ppb.Deal(
        id=did, contact_id=cid, version=v, name=f"Deal v{v}", pipeline_id="p1",
        stage_id=f.pop("stage_id", "s1"), stage_name="Qualify", status=f.pop("status", "open"),
        amount=Money(amount=f.pop("amount", "100.00"), currency="USD"), **f,
    )  # fmt: skip
    d.created_at.FromDatetime(NOW - timedelta(days=3))
    if d.status == "won":
        d.closed_at.FromDatetime(NOW - timedelta(days=1))
    return incoming(cls(deal=d), tenant, did, v, v)


def contact(tenant: str, cid: str, v: int, name: str) -> IncomingEvent:
    c = kpb.Contact(id=cid, version=v, first_name=name, last_name="L", email=f"{name}@x.io")
    return incoming(kpb.ContactCreated(contact=c), tenant, cid, v, 50)


def pipeline_stream(ids: Ids, tenant: str) -> list[IncomingEvent]:
    """Deals created before two of their contacts, one moved A -> B -> C (no document)
    within one run of updates, won, deleted; an order and a task."""
    order = ppb.Order(id=ids.o1, contact_id=ids.a, version=1, status="paid",
                      amount=Money(amount="40.00", currency="USD"))  # fmt: skip
    order.ordered_at.FromDatetime(NOW - timedelta(days=2))
    order.paid_at.FromDatetime(NOW - timedelta(days=2))
    task = ppb.Task(id=ids.t1, contact_id=ids.b, version=1, title="Call", status="open")
    return [
        deal(ids, tenant, ppb.DealCreated, ids.d1, ids.a, 1),
        deal(ids, tenant, ppb.DealCreated, ids.d2, ids.b, 1),
        deal(ids, tenant, ppb.DealCreated, ids.d3, ids.a, 1, amount="7.00"),
        deal(ids, tenant, ppb.DealUpdated, ids.d1, ids.b, 2),
        deal(ids, tenant, ppb.DealUpdated, ids.d2, ids.b, 2, amount="250.00"),
        deal(ids, tenant, ppb.DealUpdated, ids.d1, ids.c, 3),
        deal(ids, tenant, ppb.DealUpdated, ids.d1, ids.a, 4, stage_id="s2"),
        deal(ids, tenant, ppb.DealWon, ids.d2, ids.b, 3, status="won", amount="250.00"),
        incoming(ppb.OrderPaid(order=order), tenant, ids.o1, 1, 5),
        incoming(ppb.TaskCreated(task=task), tenant, ids.t1, 1, 6),
        incoming(
            ppb.DealDeleted(deal=ppb.Deal(id=ids.d3, contact_id=ids.a, name="x")),
            tenant,
            ids.d3,
            2,
            7,
        ),
    ]


def late_stream(ids: Ids, tenant: str) -> list[IncomingEvent]:
    """Runs the chassis would not let through (an older version after a newer one: a
    redelivery after a lost position) and other sections' items, for the handlers alone."""
    ticket = tpb.Ticket(id=ids.k1, subject="Down", status="open", priority="urgent",
                        requester_contact_id=ids.b, version=1)  # fmt: skip
    email = cpb.Email(id=ids.e1, contact_id=ids.a, subject="Hi", status="sent")
    return [
        deal(ids, tenant, ppb.DealUpdated, ids.d1, ids.b, 6, amount="900.00"),
        deal(ids, tenant, ppb.DealUpdated, ids.d1, ids.c, 5),
        deal(ids, tenant, ppb.DealUpdated, ids.d2, ids.a, 5, status="won"),
        deal(ids, tenant, ppb.DealUpdated, ids.d2, ids.b, 4),
        incoming(tpb.TicketCreated(ticket=ticket), tenant, ids.k1, 1, 8),
        incoming(cpb.EmailSent(email=email), tenant, ids.e1, 1, 9),
        incoming(cpb.EmailOpened(email=email, first=True), tenant, ids.e1, 2, 10),
        incoming(cpb.EmailOpened(email=email, first=False), tenant, ids.e1, 3, 11),
        incoming(cpb.EmailClicked(email=email, first=True), tenant, ids.e1, 4, 12),
    ]


def runs(events: list[IncomingEvent]) -> list[list[IncomingEvent]]:
    """Consecutive events of one type, as the chassis dispatches them."""
    out: list[list[IncomingEvent]] = []
    for e in events:
        if out and out[-1][0].type == e.type:
            out[-1].append(e)
        else:
            out.append([e])
    return out


HANDLERS = {**pipeline.consumer.batch_handlers, **tickets.consumer.batch_handlers,
            **campaigns.consumer.batch_handlers}  # fmt: skip


async def state_of(db: Database, tenant: str) -> dict[str, Any]:
    """The tenant's documents, items and timeline entries (without event ids)."""
    p = {"t": tenant}
    async with unit_of_work(db) as s:
        docs = await s.execute(
            text(
                "SELECT CAST(contact_id AS text), state, doc FROM customer_360 WHERE tenant_id = :t"
            ),
            p,
        )
        items = await s.execute(
            text(
                "SELECT section, item_id, CAST(contact_id AS text), item, version, sort_at "
                "FROM rm_items WHERE tenant_id = :t"
            ),
            p,
        )
        entries = await s.execute(
            text(
                "SELECT CAST(contact_id AS text), occurred_at, kind, summary, data "
                "FROM timeline WHERE tenant_id = :t"
            ),
            p,
        )
        return {
            "docs": {r[0]: (r[1], r[2]) for r in docs},
            "items": sorted(map(repr, items)),
            "timeline": sorted(json.dumps([r[0], r[1].isoformat(), *r[2:]]) for r in entries),
        }


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


def runners(db: Database) -> tuple[ConsumerRunner, ConsumerRunner]:
    bus: Any = None  # `_apply` needs only the database
    return (
        ConsumerRunner(contacts.consumer, db, bus, service="gateway"),
        ConsumerRunner(pipeline.consumer, db, bus, service="gateway"),
    )


async def apply_through_chassis(
    db: Database, runner: ConsumerRunner, events: list[IncomingEvent], one_by_one: bool
) -> None:
    """The consumer's own path (inbox, version order, runs of one type), in one transaction
    for the whole list or one per event."""
    for chunk in [[e] for e in events] if one_by_one else [events]:
        async with unit_of_work(db) as s:
            await runner._apply(s, [(e.id, e) for e in chunk])


async def apply_handlers(db: Database, events: list[IncomingEvent], one_by_one: bool) -> None:
    for run in runs(events):
        for chunk in [[e] for e in run] if one_by_one else [run]:
            async with unit_of_work(db) as s:
                await HANDLERS[chunk[0].type](s, chunk)


async def scenario(db: Database, tenant: str, ids: Ids, one_by_one: bool) -> list[IncomingEvent]:
    """Returns the last events, applied by the handlers alone."""
    contacts_runner, pipeline_runner = runners(db)
    await apply_through_chassis(db, contacts_runner, [contact(tenant, ids.a, 1, "ann")], one_by_one)
    # items before B's document, and for C that never gets one (a `pending` row)
    await apply_through_chassis(db, pipeline_runner, pipeline_stream(ids, tenant), one_by_one)
    await apply_through_chassis(db, contacts_runner, [contact(tenant, ids.b, 1, "bob")], one_by_one)
    late = late_stream(ids, tenant)
    await apply_handlers(db, late, one_by_one)
    return late


async def test_a_run_gives_what_one_by_one_gives(db: Database) -> None:
    ids, other = Ids(), Ids()
    await scenario(db, "one", ids, one_by_one=True)
    late = await scenario(db, "many", other, one_by_one=False)
    one = await state_of(db, "one")
    many = other.same(ids, await state_of(db, "many"))
    # a redelivered run changes nothing (and adds no timeline entry)
    await apply_handlers(db, late, one_by_one=False)
    assert other.same(ids, await state_of(db, "many"))["timeline"] == many["timeline"]

    assert set(one["docs"]) == {ids.a, ids.b, ids.c}
    assert one["docs"][ids.c] == ("pending", None)
    doc_a, doc_b = one["docs"][ids.a][1], one["docs"][ids.b][1]
    # the older versions after newer ones (d1 v5, d2 v4) did not apply
    assert [(d["id"], d["amount"]) for d in doc_b["deals"]] == [(ids.d1, "900.00")]
    assert [(d["id"], d["status"]) for d in doc_a["deals"]] == [(ids.d2, "won")]
    assert doc_a["orders"][0]["id"] == ids.o1
    assert doc_a["metrics"]["won_deals"] == 1
    assert doc_a["campaigns"][0]["opened"]
    assert doc_a["campaigns"][0]["clicked"]
    assert doc_b["tasks"][0]["id"] == ids.t1
    assert doc_b["tickets"][0]["id"] == ids.k1
    assert "health" in doc_b["metrics"]
    assert "health" in doc_a["metrics"]

    one = json.loads(json.dumps(one, sort_keys=True, default=str))
    assert many["docs"] == one["docs"]
    assert sorted(many["items"]) == one["items"]
    assert sorted(many["timeline"]) == one["timeline"]
    # every event but the second open of the email (contacts 2, pipeline 11, late 8)
    assert len(one["timeline"]) == 21
