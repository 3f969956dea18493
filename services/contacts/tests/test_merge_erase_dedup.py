"""Duplicates, merge and erasure through the HTTP API."""

from __future__ import annotations

import uuid
from typing import Any


class TestDuplicates:
    async def test_scored_candidates_with_reasons(self, api: Any) -> None:
        co = await api.company(name="Engines")
        ada = await api.contact(
            first_name="Ada",
            last_name="Lovelace",
            email="ada@x.com",
            phone="+12025550143",
            company_id=co["id"],
        )
        same_email = await api.contact(first_name="A.", last_name="L", email="ADA@x.com")
        same_phone = await api.contact(first_name="Someone", phone="(202) 555-0143")
        fuzzy = await api.contact(first_name="Ada", last_name="Lovelaice", company_id=co["id"])
        await api.contact(first_name="Charles", last_name="Babbage", email="cb@x.com")
        r = await api.client.get(
            f"/v1/contacts/{ada['id']}/duplicates?threshold=0.3", headers=api.h()
        )
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        by_id = {i["contact"]["id"]: i for i in items}
        assert set(by_id) == {same_email["id"], same_phone["id"], fuzzy["id"]}
        assert by_id[same_email["id"]]["reasons"] == ["email"]
        assert by_id[same_phone["id"]]["reasons"] == ["phone"]
        assert by_id[fuzzy["id"]]["reasons"] == ["name", "company"]
        scores = [i["score"] for i in items]
        assert scores == sorted(scores, reverse=True)
        assert all(0 < s <= 1 for s in scores)
        r = await api.client.get(
            f"/v1/contacts/{ada['id']}/duplicates?threshold=0.85&limit=1", headers=api.h()
        )
        assert [i["contact"]["id"] for i in r.json()["items"]] == [same_email["id"]]

    async def test_rep_sees_only_own_candidates(self, api: Any) -> None:
        rep = api.h("sales_rep", "rep-1")
        mine = await api.contact(headers=rep, email="a@x.com")
        await api.contact(email="a@x.com", owner_id="someone-else")
        r = await api.client.get(f"/v1/contacts/{mine['id']}/duplicates", headers=rep)
        assert r.json()["items"] == []


class TestMerge:
    async def test_survivor_keeps_richest_fields_losers_become_tombstones(self, api: Any) -> None:
        await api.field("size", "number")
        survivor = await api.contact(first_name="Ada", tags=["vip"], external_ids={"sap": "1"})
        old = await api.contact(
            first_name="Augusta",
            last_name="King",
            email="ada@x.com",
            tags=["old"],
            custom_fields={"size": 1},
            external_ids={"hubspot": "h1"},
        )
        newer = await api.contact(
            last_name="Lovelace", phone="+12025550143", custom_fields={"size": 2}
        )
        r = await api.client.post(
            f"/v1/contacts/{survivor['id']}/merge",
            json={"duplicate_ids": [old["id"], newer["id"]]},
            headers=api.h(),
        )
        assert r.status_code == 200, r.text
        s = r.json()
        assert s["version"] == 2
        assert r.headers["etag"] == '"2"'
        assert (s["first_name"], s["last_name"], s["email"], s["phone"]) == (
            "Ada",
            "Lovelace",
            "ada@x.com",
            "+12025550143",
        )
        assert s["custom_fields"] == {"size": 2}
        assert s["tags"] == ["vip", "old"]
        assert s["external_ids"] == {"sap": "1", "hubspot": "h1"}
        gone = await api.client.get(f"/v1/contacts/{old['id']}", headers=api.h())
        assert gone.status_code == 404
        assert gone.json()["merged_into_id"] == survivor["id"]
        listed = await api.client.get("/v1/contacts", headers=api.h())
        assert [i["id"] for i in listed.json()["items"]] == [survivor["id"]]
        # the loser's external id now resolves to the survivor
        up = await api.client.put(
            "/v1/contacts/by-external-id/hubspot/h1", json={"lead_source": "erp"}, headers=api.h()
        )
        assert up.status_code == 200
        assert up.json()["id"] == survivor["id"]
        versions = await api.sql(
            "SELECT version FROM contacts WHERE id = ANY($1::uuid[])",
            [uuid.UUID(old["id"]), uuid.UUID(newer["id"])],
        )
        assert {v["version"] for v in versions} == {1}

    async def test_bad_duplicate_ids(self, api: Any) -> None:
        a = await api.contact(first_name="A")
        b = await api.contact(first_name="B")
        foreign = await api.contact(headers=api.h(tenant="globex"), first_name="F")
        url = f"/v1/contacts/{a['id']}/merge"
        for ids, path in [
            ([a["id"]], ["duplicate_ids", 0]),
            ([b["id"], str(uuid.uuid4())], ["duplicate_ids", 1]),
            ([foreign["id"]], ["duplicate_ids", 0]),
        ]:
            r = await api.client.post(url, json={"duplicate_ids": ids}, headers=api.h())
            assert r.status_code == 422, ids
            assert r.json()["errors"][0]["path"] == path
        r = await api.client.post(
            url, json={"duplicate_ids": [str(uuid.uuid4())] * 11}, headers=api.h()
        )
        assert r.status_code == 422
        r = await api.client.post(url, json={"duplicate_ids": []}, headers=api.h())
        assert r.status_code == 422
        r = await api.client.post(
            f"/v1/contacts/{uuid.uuid4()}/merge", json={"duplicate_ids": [b["id"]]}, headers=api.h()
        )
        assert r.status_code == 404
        got = await api.client.get(f"/v1/contacts/{b['id']}", headers=api.h())
        assert got.status_code == 200
        assert got.json()["version"] == 1
        r = await api.client.post(
            url, json={"duplicate_ids": [b["id"]]}, headers={**api.h(), "If-Match": '"9"'}
        )
        assert r.status_code == 412

    async def test_already_merged_cannot_merge_again(self, api: Any) -> None:
        a, b, c = [await api.contact(first_name=n) for n in "ABC"]
        await api.client.post(
            f"/v1/contacts/{a['id']}/merge", json={"duplicate_ids": [b["id"]]}, headers=api.h()
        )
        r = await api.client.post(
            f"/v1/contacts/{c['id']}/merge", json={"duplicate_ids": [b["id"]]}, headers=api.h()
        )
        assert r.status_code == 422


class TestErase:
    async def test_erase_removes_personal_data(self, api: Any) -> None:
        await api.field("size", "number")
        c = await api.contact(
            first_name="Ada",
            last_name="L",
            email="ada@x.com",
            phone="+12025550143",
            tags=["vip"],
            custom_fields={"size": 1},
            external_ids={"sap": "1"},
            lifecycle_stage="customer",
        )
        loser = await api.contact(first_name="Ada", email="ada2@x.com")
        await api.client.post(
            f"/v1/contacts/{c['id']}/merge", json={"duplicate_ids": [loser["id"]]}, headers=api.h()
        )
        r = await api.client.post(f"/v1/contacts/{c['id']}/erase", headers=api.h())
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == 3
        assert body["erased_at"]
        for f in ("first_name", "last_name", "email", "phone"):
            assert body[f] is None
        assert body["tags"] == []
        assert body["custom_fields"] == {}
        assert body["external_ids"] == {}
        rows = await api.sql(
            "SELECT first_name, email, phone, custom_fields, external_ids, "
            "search_text FROM contacts"
        )
        for row in rows:
            assert row["first_name"] is None
            assert row["email"] is None
            assert row["search_text"].strip() == ""
        assert (await api.sql("SELECT count(*) AS n FROM contact_external_ids"))[0]["n"] == 0
        assert (await api.client.get(f"/v1/contacts/{c['id']}", headers=api.h())).status_code == 410
        again = await api.client.post(f"/v1/contacts/{c['id']}/erase", headers=api.h())
        assert again.status_code == 410

    async def test_admin_only(self, api: Any) -> None:
        c = await api.contact(first_name="A")
        for role in ("sales_manager", "erp_sync", "partner"):
            r = await api.client.post(f"/v1/contacts/{c['id']}/erase", headers=api.h(role))
            assert r.status_code == 403, role
        r = await api.client.post(f"/v1/contacts/{c['id']}/erase", headers=api.h(tenant="globex"))
        assert r.status_code == 404
