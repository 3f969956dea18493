"""The contacts consumer: merges re-point deals and orders, deletions and erasures clear
the contact, custom field definitions feed the local replica."""

from __future__ import annotations

from typing import Any

import pytest

from chassis.testing import wait_for
from crm.common.v1.common_pb2 import EventMeta
from crm.contacts.v1 import contacts_pb2 as cpb
from crm.pipeline.v1 import pipeline_pb2 as pb
from pipeline.core.testkit import CoreApi, new_id, parse


@pytest.fixture
def api(client: Any, crm_infra: Any, db_url: str, app: Any) -> CoreApi:
    return CoreApi(client, crm_infra, db_url, app)


def meta(aggregate_id: str, version: int) -> EventMeta:
    return EventMeta(tenant_id="acme", aggregate_id=aggregate_id, version=version, actor="admin-7")


async def order(api: CoreApi, ext: str, contact: str, deal_id: str | None = None) -> dict[str, Any]:
    body = {
        "contact_id": contact,
        "deal_id": deal_id,
        "ordered_at": "2026-11-20T10:00:00Z",
        "amount": "1",
        "currency": "EUR",
    }
    r = await api.client.put(
        f"/v1/orders/by-external-id/sap/{ext}", json=body, headers=api.h("erp_sync")
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


class TestContactMerged:
    async def test_deals_and_orders_move_to_the_survivor(self, api: CoreApi) -> None:
        p = await api.pipeline()
        survivor, loser, bystander = new_id(), new_id(), new_id()
        d1 = await api.deal(p, contact_id=loser, owner_id="u-rep1")
        d2 = await api.deal(p, contact_id=bystander)
        gone = await api.deal(p, contact_id=loser)
        await api.client.delete(f"/v1/deals/{gone['id']}", headers={**api.h(), "If-Match": '"1"'})
        o1 = await order(api, "1", loser, d1["id"])
        await api.publish_contacts_event(cpb.ContactCreated(meta=meta(survivor, 1)), survivor, 1)
        await api.publish_contacts_event(
            cpb.ContactMerged(meta=meta(survivor, 2), survivor_id=survivor, merged_ids=[loser]),
            survivor,
            2,
        )

        async def moved() -> bool:
            rows = await api.sql("SELECT contact_id, version FROM deals WHERE id = $1", d1["id"])
            return str(rows[0]["contact_id"]) == survivor

        await wait_for(moved, message="deal re-pointed")
        got = (await api.client.get(f"/v1/deals/{d1['id']}", headers=api.h())).json()
        assert (got["contact_id"], got["version"]) == (survivor, 2)
        other = (await api.client.get(f"/v1/deals/{d2['id']}", headers=api.h())).json()
        assert (other["contact_id"], other["version"]) == (bystander, 1)
        tomb = await api.sql("SELECT contact_id FROM deals WHERE id = $1", gone["id"])
        assert str(tomb[0]["contact_id"]) == loser  # deleted deals are left alone
        o = (await api.client.get(f"/v1/orders/{o1['id']}", headers=api.h())).json()
        assert (o["contact_id"], o["version"]) == (survivor, 2)

        msgs = await api.events(1, ".deal.updated")
        ev = parse(msgs[0], pb.DealUpdated)
        assert (ev.deal.id, ev.deal.contact_id, ev.meta.version) == (d1["id"], survivor, 2)
        assert list(ev.meta.changed_fields) == ["contact_id"]
        assert (ev.meta.actor, ev.meta.origin) == ("admin-7", "crm/contacts")
        assert ev.deal.stage_name == "Qualify"
        orders = await api.events(2, ".order.")
        up = parse(orders[1], pb.OrderUpserted)
        assert (up.order.contact_id, up.order.version, up.order.owner_id) == (survivor, 2, "u-rep1")

    async def test_redelivery_has_no_second_effect(self, api: CoreApi) -> None:
        p = await api.pipeline()
        survivor, loser = new_id(), new_id()
        d = await api.deal(p, contact_id=loser)
        msg = cpb.ContactMerged(meta=meta(survivor, 2), survivor_id=survivor, merged_ids=[loser])
        await api.publish_contacts_event(cpb.ContactCreated(meta=meta(survivor, 1)), survivor, 1)
        await api.publish_contacts_event(msg, survivor, 2)

        async def applied() -> bool:
            rows = await api.sql("SELECT version FROM deals WHERE id = $1", d["id"])
            return rows[0]["version"] == 2

        await wait_for(applied, message="merge applied")
        # the same version again (another event id) is older than what is applied: a no-op
        await api.publish_contacts_event(msg, survivor, 2)
        marker = new_id()
        await api.publish_contacts_event(cpb.ContactDeleted(meta=meta(marker, 1)), marker, 1)

        async def marker_seen() -> bool:
            rows = await api.sql(
                "SELECT count(*) AS n FROM consumer_positions "
                "WHERE consumer = 'pipeline-core' AND aggregate_id = $1",
                marker,
            )
            return rows[0]["n"] == 1

        await wait_for(marker_seen, message="later event consumed")
        rows = await api.sql("SELECT version FROM deals WHERE id = $1", d["id"])
        assert rows[0]["version"] == 2


class TestContactDeletedOrErased:
    @pytest.mark.parametrize("event", ["deleted", "erased"])
    async def test_contact_cleared(self, api: CoreApi, event: str) -> None:
        p = await api.pipeline()
        contact, company = new_id(), new_id()
        d = await api.deal(p, contact_id=contact, company_id=company)
        o = await order(api, "1", contact)
        message: Any = (
            cpb.ContactDeleted(meta=meta(contact, 3))
            if event == "deleted"
            else cpb.ContactErased(meta=meta(contact, 3))
        )
        # versions 1 and 2 of the contact happened before this test's stream: the consumer
        # follows the contact from its first event
        await api.publish_contacts_event(cpb.ContactCreated(meta=meta(contact, 1)), contact, 1)
        await api.publish_contacts_event(cpb.ContactUpdated(meta=meta(contact, 2)), contact, 2)
        await api.publish_contacts_event(message, contact, 3)

        async def cleared() -> bool:
            rows = await api.sql("SELECT contact_id FROM deals WHERE id = $1", d["id"])
            return rows[0]["contact_id"] is None

        await wait_for(cleared, message="contact cleared")
        got = (await api.client.get(f"/v1/deals/{d['id']}", headers=api.h())).json()
        assert (got["contact_id"], got["company_id"], got["version"]) == (None, company, 2)
        r = await api.client.get(f"/v1/orders/{o['id']}", headers=api.h())
        assert r.json()["contact_id"] is None
        ev = parse((await api.events(1, ".deal.updated"))[0], pb.DealUpdated)
        assert ev.deal.contact_id == ""
        assert list(ev.meta.changed_fields) == ["contact_id"]


class TestCompanyDeleted:
    async def test_company_cleared_where_it_can_be(self, api: CoreApi) -> None:
        p = await api.pipeline()
        company, contact = new_id(), new_id()
        d = await api.deal(p, company_id=company)
        base = {"ordered_at": "2026-11-20T10:00:00Z", "amount": "1", "currency": "EUR"}
        both = await api.client.put(
            "/v1/orders/by-external-id/sap/both",
            json={**base, "company_id": company, "contact_id": contact},
            headers=api.h(),
        )
        only = await api.client.put(
            "/v1/orders/by-external-id/sap/only",
            json={**base, "company_id": company},
            headers=api.h(),
        )
        await api.publish_contacts_event(cpb.CompanyCreated(meta=meta(company, 1)), company, 1)
        await api.publish_contacts_event(cpb.CompanyDeleted(meta=meta(company, 2)), company, 2)

        async def cleared() -> bool:
            rows = await api.sql("SELECT company_id FROM deals WHERE id = $1", d["id"])
            return rows[0]["company_id"] is None

        await wait_for(cleared, message="company cleared")
        got = (await api.client.get(f"/v1/deals/{d['id']}", headers=api.h())).json()
        assert got["version"] == 2
        o1 = (await api.client.get(f"/v1/orders/{both.json()['id']}", headers=api.h())).json()
        o2 = (await api.client.get(f"/v1/orders/{only.json()['id']}", headers=api.h())).json()
        assert (o1["company_id"], o1["contact_id"], o1["version"]) == (None, contact, 2)
        assert (o2["company_id"], o2["version"]) == (company, 1)
        ev = parse((await api.events(1, ".deal.updated"))[0], pb.DealUpdated)
        assert list(ev.meta.changed_fields) == ["company_id"]


class TestCustomFieldReplica:
    async def test_defined_then_used_for_validation(self, api: CoreApi) -> None:
        field_id = new_id()
        definition = cpb.CustomFieldDefinition(
            object_type="deal", key="tier", label="Tier", type="enum", options=["gold"], version=1
        )
        await api.publish_contacts_event(
            cpb.CustomFieldDefined(meta=meta(field_id, 1), definition=definition), field_id, 1
        )

        async def replicated() -> list[Any]:
            return await api.sql(
                "SELECT options, version FROM custom_field_definitions WHERE key = 'tier'"
            )

        rows = await wait_for(replicated, message="definition replicated")
        assert list(rows[0]["options"]) == ["gold"]
        p = await api.pipeline()
        body = {"name": "D", "pipeline_id": p["id"], "currency": "EUR"}
        bad = await api.client.post(
            "/v1/deals", json={**body, "custom_fields": {"tier": "silver"}}, headers=api.h()
        )
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["path"] == ["custom_fields", "tier"]
        definition.options.append("silver")
        definition.version = 2
        await api.publish_contacts_event(
            cpb.CustomFieldDefined(meta=meta(field_id, 2), definition=definition), field_id, 2
        )

        async def updated() -> bool:
            rows = await api.sql("SELECT version FROM custom_field_definitions WHERE key = 'tier'")
            return rows[0]["version"] == 2

        await wait_for(updated, message="definition updated")
        ok = await api.client.post(
            "/v1/deals", json={**body, "custom_fields": {"tier": "silver"}}, headers=api.h()
        )
        assert ok.status_code == 201
        assert ok.json()["custom_fields"] == {"tier": "silver"}
