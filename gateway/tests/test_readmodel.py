"""The 360 read model, end to end: contacts events published to JetStream, the gateway's
consumer applies them, the document and timeline are read through the HTTP API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import asyncpg
from httpx import AsyncClient

from chassis.db import asyncpg_dsn
from chassis.testing import Infra, wait_for

Read360 = Callable[..., Any]
NewId = Callable[[], str]


async def _timeline(client: AsyncClient, infra: Infra, cid: str, **params: Any) -> Any:
    r = await client.get(f"/v1/customers/{cid}/timeline", params=params, headers=infra.auth())
    return r


async def _kinds(client: AsyncClient, infra: Infra, cid: str) -> list[str]:
    r = await _timeline(client, infra, cid)
    return [i["kind"] for i in r.json()["items"]] if r.status_code == 200 else []


async def _sql(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


class TestContactLifecycle:
    async def test_created_contact_shows_in_360(
        self, client: AsyncClient, events: Any, read_360: Read360, new_id: NewId
    ) -> None:
        cid = new_id()
        await events.publish(
            events.contact_created(
                "acme", cid, owner_id="rep-1", tags=["vip"], lifecycle_stage="lead"
            )
        )
        r = await read_360(cid)
        assert r.headers["etag"] == '"1"'
        assert r.headers["content-type"] == "application/json"
        doc = r.json()
        assert doc["customer_id"] == cid
        assert doc["contact"]["first_name"] == "Ada"
        assert doc["contact"]["email"] == "ada@example.com"
        assert doc["contact"]["tags"] == ["vip"]
        assert doc["contact"]["owner_id"] == "rep-1"
        assert doc["contact"]["phone"] is None
        assert doc["contact"]["consent"]["email_marketing"] == "unknown"
        assert doc["company"] is None
        assert doc["deals"] == []
        assert doc["orders"] == []
        assert doc["tickets"] == []
        assert doc["campaigns"] == []
        assert doc["loyalty"] is None
        # Born with the analytics of "nothing known" (gateway.readmodel.analytics).
        assert set(doc["metrics"]) == {"rfm", "health", "churn_risk"}
        assert doc["metrics"]["rfm"]["segment"] is None
        assert doc["versions"] == {"contact": 1}
        assert doc["as_of"] == "2025-01-01T12:00:01Z"

    async def test_update_changes_fields_and_versions(
        self, client: AsyncClient, events: Any, read_360: Read360, new_id: NewId, crm_infra: Infra
    ) -> None:
        cid = new_id()
        await events.publish(
            events.contact_created("acme", cid),
            events.contact_updated("acme", cid, 2, ["email"], email="ada@engines.example"),
            events.contact_updated(
                "acme", cid, 3, ["phone"], email="ada@engines.example", phone="+4930123456"
            ),
        )
        r = await read_360(cid, until=lambda d: d["versions"]["contact"] == 3)
        assert r.headers["etag"] == '"3"'
        doc = r.json()
        assert doc["contact"]["email"] == "ada@engines.example"
        assert doc["contact"]["phone"] == "+4930123456"
        t = (await _timeline(client, crm_infra, cid)).json()
        assert [i["kind"] for i in t["items"]] == [
            "contact.updated",
            "contact.updated",
            "contact.created",
        ]
        assert t["items"][0]["summary"] == "Contact updated: phone"
        assert t["items"][0]["data"] == {
            "actor": "user-1",
            "origin": "web",
            "changed_fields": ["phone"],
        }
        # no personal values on the timeline
        assert "+4930123456" not in json.dumps(t)

    async def test_if_none_match_gives_304(
        self, client: AsyncClient, events: Any, read_360: Read360, new_id: NewId, crm_infra: Infra
    ) -> None:
        cid = new_id()
        await events.publish(events.contact_created("acme", cid))
        await read_360(cid)
        r = await client.get(
            f"/v1/customers/{cid}/360", headers={**crm_infra.auth(), "If-None-Match": '"1"'}
        )
        assert r.status_code == 304
        assert r.headers["etag"] == '"1"'

    async def test_out_of_order_versions_apply_in_order(
        self, client: AsyncClient, events: Any, read_360: Read360, new_id: NewId, crm_infra: Infra
    ) -> None:
        cid = new_id()
        v1 = events.contact_created("acme", cid)
        v2 = events.contact_updated("acme", cid, 2, ["last_name"], last_name="Byron")
        v3 = events.contact_updated("acme", cid, 3, ["last_name"], last_name="King")
        await events.publish(v3, v2)
        await events.publish(v1)
        r = await read_360(cid, until=lambda d: d["versions"]["contact"] == 3, timeout=15)
        assert r.json()["contact"]["last_name"] == "King"
        assert await _kinds(client, crm_infra, cid) == [
            "contact.updated",
            "contact.updated",
            "contact.created",
        ]
        # a stale version arriving late changes nothing
        await events.publish(
            events.contact_updated("acme", cid, 2, ["last_name"], last_name="Stale"),
            msg_id="stale-copy",
        )
        await events.publish(
            events.contact_updated("acme", cid, 4, ["tags"], last_name="King", tags=["t"])
        )
        r = await read_360(cid, until=lambda d: d["versions"]["contact"] == 4)
        assert r.json()["contact"]["last_name"] == "King"

    async def test_duplicate_event_adds_one_timeline_entry(
        self, client: AsyncClient, events: Any, read_360: Read360, new_id: NewId, crm_infra: Infra
    ) -> None:
        cid = new_id()
        created = events.contact_created("acme", cid)
        await events.publish(created)
        # the same event again under another broker message id: JetStream keeps both
        await events.publish(created, msg_id="another-broker-id")
        await events.publish(events.contact_updated("acme", cid, 2, ["email"]))
        await read_360(cid, until=lambda d: d["versions"]["contact"] == 2)
        assert await _kinds(client, crm_infra, cid) == ["contact.updated", "contact.created"]

    async def test_deleted_contact_is_gone(
        self, client: AsyncClient, events: Any, read_360: Read360, new_id: NewId, crm_infra: Infra
    ) -> None:
        cid = new_id()
        await events.publish(events.contact_created("acme", cid))
        await read_360(cid)
        await events.publish(
            events.contact_deleted("acme", cid, 2),
            events.contact_updated("acme", cid, 3, ["email"]),
        )

        async def gone() -> bool:
            r = await client.get(f"/v1/customers/{cid}/360", headers=crm_infra.auth())
            return r.status_code == 404

        await wait_for(gone, message="deleted")
        r = await client.get(f"/v1/customers/{cid}/360", headers=crm_infra.auth())
        assert r.headers["content-type"] == "application/problem+json"
        assert (await _timeline(client, crm_infra, cid)).status_code == 404


class TestCompanies:
    async def test_company_embedded_in_every_contact_of_it(
        self,
        client: AsyncClient,
        events: Any,
        read_360: Read360,
        new_id: NewId,
        crm_infra: Infra,
    ) -> None:
        co, a, b, other = new_id(), new_id(), new_id(), new_id()
        await events.publish(
            events.company_created("acme", co),
            events.contact_created("acme", a, company_id=co),
            # a contact whose company event comes later
            events.contact_created("acme", b, company_id=other),
        )
        doc = (await read_360(a, until=lambda d: d["company"] is not None)).json()
        assert doc["company"]["name"] == "Analytical Engines"
        assert doc["company"]["annual_revenue"] == {"amount": "1000000.00", "currency": "EUR"}
        assert doc["versions"] == {"contact": 1, "company": 1}
        assert (await read_360(b)).json()["company"] is None

        await events.publish(
            events.contact_updated("acme", b, 2, ["company_id"], company_id=co),
            events.company_updated("acme", co, 2, ["name"], name="Difference Engines"),
            events.company_created("acme", other, name="Other Ltd"),
        )
        for cid in (a, b):
            doc = (
                await read_360(
                    cid, until=lambda d: (d["company"] or {}).get("name") == "Difference Engines"
                )
            ).json()
            assert doc["versions"]["company"] == 2
        assert "company.updated" in await _kinds(client, crm_infra, a)

        await events.publish(events.company_deleted("acme", co, 3))
        doc = (await read_360(a, until=lambda d: d["company"] is None)).json()
        assert "company" not in doc["versions"]


class TestMergeAndErasure:
    async def test_merge_keeps_survivor_and_repoints_timeline(
        self,
        client: AsyncClient,
        events: Any,
        read_360: Read360,
        new_id: NewId,
        crm_infra: Infra,
    ) -> None:
        survivor, loser = new_id(), new_id()
        await events.publish(
            events.contact_created("acme", survivor),
            events.contact_created("acme", loser, first_name="Augusta"),
            events.contact_updated("acme", loser, 2, ["phone"], phone="+100"),
        )
        await read_360(loser, until=lambda d: d["versions"]["contact"] == 2)
        await events.publish(events.contact_merged("acme", survivor, 2, [loser], phone="+100"))
        doc = (await read_360(survivor, until=lambda d: d["versions"]["contact"] == 2)).json()
        assert doc["contact"]["phone"] == "+100"
        r = await client.get(f"/v1/customers/{loser}/360", headers=crm_infra.auth())
        assert r.status_code == 404
        kinds = await _kinds(client, crm_infra, survivor)
        assert kinds[0] == "contact.merged"
        assert sorted(kinds) == sorted(
            ["contact.merged", "contact.updated", "contact.created", "contact.created"]
        )
        # the loser's own tombstone snapshot arriving later does not bring it back
        await events.publish(
            events.contact_updated("acme", loser, 3, ["merged_into_id"], merged_into_id=survivor)
        )
        await events.publish(events.contact_updated("acme", survivor, 3, ["email"]))
        await read_360(survivor, until=lambda d: d["versions"]["contact"] == 3)
        r = await client.get(f"/v1/customers/{loser}/360", headers=crm_infra.auth())
        assert r.status_code == 404

    async def test_erasure_purges_document_and_timeline(
        self,
        client: AsyncClient,
        events: Any,
        read_360: Read360,
        new_id: NewId,
        crm_infra: Infra,
        db_url: str,
    ) -> None:
        cid = new_id()
        await events.publish(
            events.contact_created("acme", cid, email="erase.me@example.com"),
            events.contact_updated("acme", cid, 2, ["email"], email="erase.me@example.com"),
        )
        await read_360(cid, until=lambda d: d["versions"]["contact"] == 2)
        await events.publish(events.contact_erased("acme", cid, 3))

        async def purged() -> bool:
            rows = await _sql(
                db_url, "SELECT state, doc, owner_id FROM customer_360 WHERE contact_id = $1", cid
            )
            return bool(rows) and rows[0]["state"] == "erased"

        await wait_for(purged, message="erased")
        rows = await _sql(
            db_url, "SELECT doc, owner_id, company_id FROM customer_360 WHERE contact_id = $1", cid
        )
        assert rows[0]["doc"] is None
        assert rows[0]["owner_id"] is None
        assert await _sql(db_url, "SELECT 1 FROM timeline WHERE contact_id = $1", cid) == []
        dump = await _sql(
            db_url, "SELECT count(*) AS n FROM customer_360 WHERE doc::text LIKE '%erase.me%'"
        )
        assert dump[0]["n"] == 0
        r = await client.get(f"/v1/customers/{cid}/360", headers=crm_infra.auth())
        assert r.status_code == 404


class TestVisibility:
    async def test_other_tenant_gets_404(
        self, client: AsyncClient, events: Any, read_360: Read360, new_id: NewId, crm_infra: Infra
    ) -> None:
        cid = new_id()
        await events.publish(events.contact_created("acme", cid))
        await read_360(cid)
        r = await client.get(f"/v1/customers/{cid}/360", headers=crm_infra.auth(tenant="globex"))
        assert r.status_code == 404
        r = await client.get(
            f"/v1/customers/{cid}/timeline", headers=crm_infra.auth(tenant="globex")
        )
        assert r.status_code == 404

    async def test_roles(
        self, client: AsyncClient, events: Any, read_360: Read360, new_id: NewId, crm_infra: Infra
    ) -> None:
        cid = new_id()
        await events.publish(events.contact_created("acme", cid, owner_id="rep-1"))
        await read_360(cid)

        async def status(roles: list[str], sub: str = "someone") -> int:
            r = await client.get(
                f"/v1/customers/{cid}/360", headers=crm_infra.auth(roles=roles, sub=sub)
            )
            return r.status_code

        for role in ("admin", "sales_manager", "marketer", "support_agent"):
            assert await status([role]) == 200, role
        assert await status(["sales_rep"], sub="rep-1") == 200
        assert await status(["sales_rep"], sub="rep-2") == 404
        assert await status(["partner"]) == 404
        assert await status(["erp_sync"]) == 404
        r = await client.get(
            f"/v1/customers/{cid}/timeline",
            headers=crm_infra.auth(roles=["sales_rep"], sub="rep-2"),
        )
        assert r.status_code == 404

    async def test_unknown_or_malformed_id_is_404_and_no_token_401(
        self, client: AsyncClient, crm_infra: Infra, new_id: NewId
    ) -> None:
        for cid in (new_id(), "not-a-uuid"):
            r = await client.get(f"/v1/customers/{cid}/360", headers=crm_infra.auth())
            assert r.status_code == 404
            assert r.headers["content-type"] == "application/problem+json"
        r = await client.get(f"/v1/customers/{new_id()}/360")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"


class TestTimeline:
    async def test_newest_first_pagination_and_kind_filter(
        self,
        client: AsyncClient,
        events: Any,
        read_360: Read360,
        new_id: NewId,
        crm_infra: Infra,
    ) -> None:
        cid = new_id()
        evs = [events.contact_created("acme", cid)]
        evs += [events.contact_updated("acme", cid, v, [f"field_{v}"]) for v in range(2, 8)]
        await events.publish(*evs)
        await read_360(cid, until=lambda d: d["versions"]["contact"] == 7)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = (await _timeline(client, crm_infra, cid, **params)).json()
            seen += [i["summary"] for i in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == [f"Contact updated: field_{v}" for v in range(7, 1, -1)] + [
            "Contact created"
        ]
        page = (await _timeline(client, crm_infra, cid, kind="contact.created")).json()
        assert [i["kind"] for i in page["items"]] == ["contact.created"]
        assert page["next_cursor"] is None
        item = page["items"][0]
        assert set(item) == {"id", "occurred_at", "kind", "summary", "data", "event_id"}
        assert item["occurred_at"] == "2025-01-01T12:00:01Z" or item["occurred_at"].endswith("Z")

    async def test_bad_cursor_is_422(
        self, client: AsyncClient, crm_infra: Infra, new_id: NewId
    ) -> None:
        r = await _timeline(client, crm_infra, new_id(), cursor="garbage!")
        assert r.status_code == 422
