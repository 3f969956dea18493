"""Segments through the API over a replica fed by contacts events."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from httpx import AsyncClient

from chassis.testing import Infra

VIP = {
    "all": [
        {"field": "tags", "op": "contains", "value": "vip"},
        {
            "any": [
                {"field": "lifecycle_stage", "op": "in", "value": ["lead", "mql"]},
                {"field": "cf.region", "op": "eq", "value": "EMEA"},
            ]
        },
    ]
}


async def seed(upstream: Any) -> dict[str, str]:
    ids = {
        "vip_lead": await upstream.contact(tags=["vip"], lifecycle_stage="lead"),
        "vip_customer_emea": await upstream.contact(
            tags=["vip"], lifecycle_stage="customer", custom_fields={"region": "EMEA"}
        ),
        "vip_customer_us": await upstream.contact(
            tags=["vip"], lifecycle_stage="customer", custom_fields={"region": "US"}
        ),
        "plain_lead": await upstream.contact(tags=[], lifecycle_stage="lead"),
        "other_tenant": await upstream.contact(
            tenant="globex", tags=["vip"], lifecycle_stage="lead"
        ),
    }
    for cid in ids.values():
        await upstream.wait_contact(cid)
    return ids


class TestReplica:
    async def test_snapshot_fields_consent_and_custom_fields(
        self, upstream: Any, db: asyncpg.Connection
    ) -> None:
        cid = await upstream.contact(
            email="Ada@Example.COM", consent="denied", custom_fields={"region": "EMEA", "size": 12}
        )
        await upstream.wait_contact(cid)
        row = await db.fetchrow("SELECT * FROM contacts WHERE id = $1", uuid.UUID(cid))
        assert row["email"] == "ada@example.com"
        assert row["email_marketing"] == "denied"
        assert row["legal_basis"] == "consent"
        assert '"region": "EMEA"' in row["custom_fields"]
        await upstream.contact(
            cid=cid, email="ada@example.com", consent="granted", lifecycle_stage="mql"
        )
        await upstream.wait_contact(cid, 2)
        row = await db.fetchrow("SELECT * FROM contacts WHERE id = $1", uuid.UUID(cid))
        assert (row["email_marketing"], row["lifecycle_stage"], row["version"]) == (
            "granted",
            "mql",
            2,
        )

    async def test_erase_removes_personal_data(self, upstream: Any, db: asyncpg.Connection) -> None:
        cid = await upstream.contact(first_name="Grace", tags=["vip"], custom_fields={"x": "y"})
        await upstream.erased("acme", cid)
        await upstream.wait_contact(cid, 2)
        row = await db.fetchrow("SELECT * FROM contacts WHERE id = $1", uuid.UUID(cid))
        assert row["erased_at"] is not None
        assert (row["first_name"], row["email"], list(row["tags"]), row["custom_fields"]) == (
            None,
            None,
            [],
            "{}",
        )

    async def test_merge_makes_tombstones(self, upstream: Any, db: asyncpg.Connection) -> None:
        survivor = await upstream.contact(tags=["vip"])
        loser = await upstream.contact(tags=["vip"])
        await upstream.wait_contact(loser)
        await upstream.merged("acme", survivor, [loser], tags=["vip", "merged"])
        await upstream.wait_contact(survivor, 2)
        merged_into = await db.fetchval(
            "SELECT merged_into_id FROM contacts WHERE id = $1", uuid.UUID(loser)
        )
        assert str(merged_into) == survivor


class TestSegments:
    async def test_dynamic_segment_count_members_and_preview(
        self, client: AsyncClient, upstream: Any
    ) -> None:
        ids = await seed(upstream)
        r = await client.post(
            "/v1/segments", json={"name": "VIP leads", "type": "dynamic", "filter": VIP}
        )
        assert r.status_code == 201, r.text
        assert r.headers["ETag"] == '"1"'
        sid = r.json()["id"]
        r = await client.get(f"/v1/segments/{sid}/count")
        assert r.json() == {"count": 2}
        r = await client.get(f"/v1/segments/{sid}/members")
        got = {m["contact_id"] for m in r.json()["items"]}
        assert got == {ids["vip_lead"], ids["vip_customer_emea"]}
        r = await client.post(
            "/v1/segments/preview",
            json={"filter": {"all": [{"field": "lifecycle_stage", "op": "eq", "value": "lead"}]}},
        )
        assert r.status_code == 200
        assert r.json()["count"] == 2
        assert {m["contact_id"] for m in r.json()["items"]} == {ids["vip_lead"], ids["plain_lead"]}

    async def test_dynamic_segment_follows_contact_changes(
        self, client: AsyncClient, upstream: Any
    ) -> None:
        ids = await seed(upstream)
        sid = (await client.post("/v1/segments", json={"name": "v", "filter": VIP})).json()["id"]
        await upstream.contact(cid=ids["plain_lead"], tags=["vip"], lifecycle_stage="lead")
        await upstream.erased("acme", ids["vip_lead"])
        await upstream.wait_contact(ids["plain_lead"], 2)
        await upstream.wait_contact(ids["vip_lead"], 2)
        r = await client.get(f"/v1/segments/{sid}/members")
        assert {m["contact_id"] for m in r.json()["items"]} == {
            ids["plain_lead"],
            ids["vip_customer_emea"],
        }

    async def test_members_keyset_pagination(self, client: AsyncClient, upstream: Any) -> None:
        cids = [await upstream.contact(tags=["p"]) for _ in range(5)]
        for c in cids:
            await upstream.wait_contact(c)
        sid = (
            await client.post(
                "/v1/segments",
                json={
                    "name": "p",
                    "filter": {"all": [{"field": "tags", "op": "contains", "value": "p"}]},
                },
            )
        ).json()["id"]
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get(f"/v1/segments/{sid}/members", params=params)).json()
            seen += [m["contact_id"] for m in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(cids)

    async def test_static_segment_members(self, client: AsyncClient, upstream: Any) -> None:
        ids = await seed(upstream)
        r = await client.post(
            "/v1/segments",
            json={"name": "picked", "type": "static", "contact_ids": [ids["plain_lead"]]},
        )
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        r = await client.post(
            f"/v1/segments/{sid}/members",
            json={"contact_ids": [ids["vip_lead"], ids["plain_lead"]]},
        )
        assert r.status_code == 200
        assert r.json()["version"] == 2
        assert (await client.get(f"/v1/segments/{sid}/count")).json() == {"count": 2}
        await client.post(
            f"/v1/segments/{sid}/members/remove", json={"contact_ids": [ids["plain_lead"]]}
        )
        members = (await client.get(f"/v1/segments/{sid}/members")).json()["items"]
        assert [m["contact_id"] for m in members] == [ids["vip_lead"]]
        # another tenant's contact is not a known contact here
        r = await client.post(
            f"/v1/segments/{sid}/members", json={"contact_ids": [ids["other_tenant"]]}
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["contact_ids", 0]

    async def test_patch_needs_if_match(self, client: AsyncClient) -> None:
        sid = (await client.post("/v1/segments", json={"name": "a", "filter": VIP})).json()["id"]
        r = await client.patch(f"/v1/segments/{sid}", json={"name": "b"})
        assert r.status_code == 428
        r = await client.patch(
            f"/v1/segments/{sid}", json={"name": "b"}, headers={"If-Match": '"7"'}
        )
        assert r.status_code == 412
        r = await client.patch(
            f"/v1/segments/{sid}", json={"name": "b"}, headers={"If-Match": '"1"'}
        )
        assert r.status_code == 200
        assert r.json()["name"] == "b"
        assert r.headers["ETag"] == '"2"'
        r = await client.delete(f"/v1/segments/{sid}", headers={"If-Match": '"2"'})
        assert r.status_code == 204
        assert (await client.get(f"/v1/segments/{sid}")).status_code == 404

    async def test_other_tenant_sees_404(self, client: AsyncClient, crm_infra: Infra) -> None:
        sid = (await client.post("/v1/segments", json={"name": "a", "filter": VIP})).json()["id"]
        r = await client.get(
            f"/v1/segments/{sid}/count", headers=crm_infra.auth(tenant="globex", roles=["marketer"])
        )
        assert r.status_code == 404

    async def test_sales_rep_is_forbidden(self, client: AsyncClient, crm_infra: Infra) -> None:
        r = await client.get("/v1/segments", headers=crm_infra.auth(roles=["sales_rep"]))
        assert r.status_code == 403


class TestBadFilters:
    async def test_unknown_field_and_op_are_named(
        self, client: AsyncClient, db: asyncpg.Connection
    ) -> None:
        bad = {
            "all": [
                {"field": "shoe_size", "op": "eq", "value": 1},
                {"any": [{"field": "email", "op": "like", "value": "x"}]},
            ]
        }
        r = await client.post("/v1/segments", json={"name": "bad", "filter": bad})
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        paths = [e["path"] for e in r.json()["errors"]]
        assert ["filter", "all", 0, "field"] in paths
        assert ["filter", "all", 1, "any", 0, "op"] in paths
        assert "shoe_size" in r.text
        assert "like" in r.text
        assert await db.fetchval("SELECT count(*) FROM segments") == 0
        assert await db.fetchval("SELECT count(*) FROM outbox") == 0

    async def test_wrong_values_and_shapes(self, client: AsyncClient) -> None:
        cases = [
            (
                {"all": [{"field": "lifecycle_stage", "op": "in", "value": "lead"}]},
                ["filter", "all", 0, "value"],
            ),
            (
                {"all": [{"field": "created_at", "op": "within_last_days", "value": -1}]},
                ["filter", "all", 0, "value"],
            ),
            (
                {"all": [{"field": "created_at", "op": "gt", "value": "yesterday"}]},
                ["filter", "all", 0, "value"],
            ),
            ({"all": [{"field": "tags", "op": "gt", "value": "a"}]}, ["filter", "all", 0, "op"]),
            (
                {"all": [{"field": "score.nope", "op": "gte", "value": 5}]},
                ["filter", "all", 0, "field"],
            ),
            (
                {"all": [{"field": "engagement.opened", "op": "eq", "value": "not-a-uuid"}]},
                ["filter", "all", 0, "value"],
            ),
            ({"both": []}, ["filter"]),
            ({"not": [1]}, ["filter", "not"]),
        ]
        for tree, path in cases:
            r = await client.post("/v1/segments/preview", json={"filter": tree})
            assert r.status_code == 422, tree
            assert r.json()["errors"][0]["path"] == path, (tree, r.json())

    async def test_static_with_filter_and_dynamic_without(self, client: AsyncClient) -> None:
        r = await client.post("/v1/segments", json={"name": "x", "type": "static", "filter": VIP})
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["filter"]
        r = await client.post("/v1/segments", json={"name": "x", "type": "dynamic"})
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["filter"]


class TestContactSegments:
    async def test_segments_of_a_contact(self, client: AsyncClient, upstream: Any) -> None:
        ids = await seed(upstream)
        vip = (await client.post("/v1/segments", json={"name": "vip", "filter": VIP})).json()
        leads = (
            await client.post(
                "/v1/segments",
                json={
                    "name": "leads",
                    "filter": {"all": [{"field": "lifecycle_stage", "op": "eq", "value": "lead"}]},
                },
            )
        ).json()
        picked = (
            await client.post(
                "/v1/segments",
                json={"name": "picked", "type": "static", "contact_ids": [ids["vip_lead"]]},
            )
        ).json()
        await client.post("/v1/segments", json={"name": "static-other", "type": "static"})
        r = await client.get(f"/v1/contacts/{ids['vip_lead']}/segments")
        assert [s["id"] for s in r.json()] == [leads["id"], picked["id"], vip["id"]]
        r = await client.get(f"/v1/contacts/{ids['plain_lead']}/segments")
        assert [s["name"] for s in r.json()] == ["leads"]
        r = await client.get(f"/v1/contacts/{ids['other_tenant']}/segments")
        assert r.status_code == 404


class TestPublishedMemberships:
    async def test_memberships_follow_segments_and_contacts(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        from chassis.testing import wait_for
        from crm.campaigns.v1 import campaigns_pb2 as cpb

        ids = await seed(upstream)

        async def latest(cid: str) -> list[str] | None:
            row = await db.fetchrow(
                "SELECT payload FROM outbox WHERE ce_type = "
                "'crm.campaigns.contact_segments.changed.v1' AND aggregate_id = $1 "
                "ORDER BY aggregate_version DESC LIMIT 1",
                cid,
            )
            if row is None:
                return None
            msg = cpb.ContactSegmentsChanged()
            msg.ParseFromString(row["payload"])
            return [s.name for s in msg.segments]

        # A new segment: a background pass publishes its members.
        sid = (await client.post("/v1/segments", json={"name": "VIP", "filter": VIP})).json()["id"]
        await wait_for(lambda: latest(ids["vip_lead"]), message="memberships published")
        assert await latest(ids["vip_lead"]) == ["VIP"]
        assert await latest(ids["vip_customer_emea"]) == ["VIP"]
        assert await latest(ids["vip_customer_us"]) is None
        assert await latest(ids["plain_lead"]) is None

        # A contact entering the segment is published at once, with its version order.
        await upstream.contact(cid=ids["plain_lead"], tags=["vip"], lifecycle_stage="lead")

        async def entered() -> bool:
            return await latest(ids["plain_lead"]) == ["VIP"]

        await wait_for(entered, message="contact entered the segment")

        # Deleting the segment empties every membership.
        r = await client.get(f"/v1/segments/{sid}")
        r = await client.delete(f"/v1/segments/{sid}", headers={"If-Match": r.headers["etag"]})
        assert r.status_code == 204

        async def emptied() -> bool:
            return all(
                [
                    await latest(ids[k]) == []
                    for k in ("vip_lead", "vip_customer_emea", "plain_lead")
                ]
            )

        await wait_for(emptied, message="memberships emptied")
        versions = await db.fetch(
            "SELECT aggregate_version FROM outbox WHERE ce_type = "
            "'crm.campaigns.contact_segments.changed.v1' AND aggregate_id = $1 "
            "ORDER BY aggregate_version",
            ids["plain_lead"],
        )
        assert [v[0] for v in versions] == list(range(1, len(versions) + 1))
