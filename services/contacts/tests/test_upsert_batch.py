"""PUT by external id and POST /v1/contacts/batch."""

from __future__ import annotations

from typing import Any


class TestUpsertContactByExternalId:
    async def test_created_then_updated_same_id(self, api: Any) -> None:
        url = "/v1/contacts/by-external-id/sap/0001"
        r1 = await api.client.put(url, json={"first_name": "Ada"}, headers=api.h())
        assert r1.status_code == 201, r1.text
        assert r1.json()["external_ids"] == {"sap": "0001"}
        r2 = await api.client.put(url, json={"last_name": "Lovelace"}, headers=api.h())
        assert r2.status_code == 200
        assert r2.json()["id"] == r1.json()["id"]
        assert r2.json()["first_name"] == "Ada"
        assert r2.json()["version"] == 2
        again = await api.client.put(url, json={"last_name": "Lovelace"}, headers=api.h())
        assert again.status_code == 200
        assert again.json()["version"] == 2

    async def test_matches_existing_contact_by_email(self, api: Any) -> None:
        c = await api.contact(email="ada@x.com")
        r = await api.client.put(
            "/v1/contacts/by-external-id/sap/9", json={"email": "ADA@x.com"}, headers=api.h()
        )
        assert r.status_code == 200
        assert r.json()["id"] == c["id"]
        assert r.json()["external_ids"] == {"sap": "9"}

    async def test_ambiguous_is_409(self, api: Any) -> None:
        await api.contact(external_ids={"sap": "1"})
        await api.contact(external_ids={"hubspot": "2"})
        r = await api.client.put(
            "/v1/contacts/by-external-id/sap/1",
            json={"external_ids": {"hubspot": "2"}},
            headers=api.h(),
        )
        assert r.status_code == 409
        await api.contact(email="dup@x.com")
        await api.contact(email="dup@x.com")
        r = await api.client.put(
            "/v1/contacts/by-external-id/sap/3", json={"email": "dup@x.com"}, headers=api.h()
        )
        assert r.status_code == 409

    async def test_bad_input(self, api: Any) -> None:
        r = await api.client.put("/v1/contacts/by-external-id/SAP!/1", json={}, headers=api.h())
        assert r.status_code == 422
        r = await api.client.put(
            "/v1/contacts/by-external-id/sap/1",
            json={"external_ids": {"sap": "2"}},
            headers=api.h(),
        )
        assert r.status_code == 422
        r = await api.client.put(
            "/v1/contacts/by-external-id/sap/1", json={"phone": "x"}, headers=api.h()
        )
        assert r.status_code == 422
        assert (await api.sql("SELECT count(*) AS n FROM contacts"))[0]["n"] == 0

    async def test_stale_if_match_is_412(self, api: Any) -> None:
        url = "/v1/contacts/by-external-id/sap/1"
        await api.client.put(url, json={"first_name": "A"}, headers=api.h())
        r = await api.client.put(
            url, json={"first_name": "B"}, headers={**api.h(), "If-Match": '"7"'}
        )
        assert r.status_code == 412


class TestBatchUpsert:
    async def test_other_methods_on_batch_are_405(self, api: Any) -> None:
        """/batch is not a contact id: PATCH, GET and DELETE there are 405 naming POST."""
        for method in ("PATCH", "GET", "DELETE"):
            r = await api.client.request(method, "/v1/contacts/batch", headers=api.h())
            assert r.status_code == 405, (method, r.status_code, r.text)
            assert r.headers["allow"] == "POST"
            assert r.headers["content-type"].startswith("application/problem+json")
        r = await api.client.get("/v1/contacts/not-a-uuid", headers=api.h())
        assert r.status_code == 404

    async def test_partial_success(self, api: Any) -> None:
        await api.field("size", "number")
        existing = await api.contact(email="old@x.com", first_name="Old")
        items = [
            {"email": "new@x.com", "external_ids": {"sap": "1"}},
            {"email": "broken"},
            {"email": "OLD@x.com", "last_name": "Updated"},
            {"custom_fields": {"size": "big"}},
            {"external_ids": {"sap": "1"}, "first_name": "Again"},
            {"unknown_field": 1},
            {"phone": "+1 202 555 0143", "lifecycle_stage": "lead"},
        ]
        r = await api.client.post("/v1/contacts/batch", json={"items": items}, headers=api.h())
        assert r.status_code == 200, r.text
        res = r.json()["items"]
        assert [x["status"] for x in res] == [
            "created",
            "error",
            "updated",
            "error",
            "updated",
            "error",
            "created",
        ]
        assert res[1]["errors"][0]["path"] == ["email"]
        assert res[3]["errors"][0]["path"] == ["custom_fields", "size"]
        assert res[5]["errors"][0]["path"] == ["unknown_field"]
        assert res[2]["id"] == existing["id"]
        assert res[2]["version"] == 2
        assert res[4]["id"] == res[0]["id"]
        assert res[4]["version"] == 2
        got = await api.client.get(f"/v1/contacts/{res[0]['id']}", headers=api.h())
        assert got.json()["first_name"] == "Again"
        assert got.json()["version"] == 2
        rows = await api.sql("SELECT count(*) AS n FROM contacts")
        assert rows[0]["n"] == 3

    async def test_replay_is_idempotent(self, api: Any) -> None:
        items = [{"external_ids": {"erp": str(i)}, "last_name": f"N{i}"} for i in range(20)]
        first = await api.client.post(
            "/v1/contacts/batch", json={"items": items}, headers=api.h("erp_sync")
        )
        second = await api.client.post(
            "/v1/contacts/batch", json={"items": items}, headers=api.h("erp_sync")
        )
        assert [x["id"] for x in first.json()["items"]] == [x["id"] for x in second.json()["items"]]
        assert {x["status"] for x in second.json()["items"]} == {"updated"}
        assert {x["version"] for x in second.json()["items"]} == {1}

    async def test_more_than_1000_is_422(self, api: Any) -> None:
        r = await api.client.post(
            "/v1/contacts/batch", json={"items": [{"first_name": "x"}] * 1001}, headers=api.h()
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["items"]

    async def test_thousand_items_in_one_request(self, api: Any) -> None:
        items = [{"email": f"p{i}@x.com", "external_ids": {"sap": str(i)}} for i in range(1000)]
        r = await api.client.post("/v1/contacts/batch", json={"items": items}, headers=api.h())
        assert r.status_code == 200
        assert {x["status"] for x in r.json()["items"]} == {"created"}
        rows = await api.sql("SELECT count(*) AS n FROM contact_external_ids")
        assert rows[0]["n"] == 1000

    async def test_partner_forbidden_and_rep_scoped(self, api: Any) -> None:
        r = await api.client.post(
            "/v1/contacts/batch", json={"items": [{"first_name": "x"}]}, headers=api.h("partner")
        )
        assert r.status_code == 403
        other = await api.contact(headers=api.h("sales_rep", "rep-1"), external_ids={"sap": "1"})
        r = await api.client.post(
            "/v1/contacts/batch",
            json={"items": [{"external_ids": {"sap": "1"}}]},
            headers=api.h("sales_rep", "rep-2"),
        )
        assert r.json()["items"][0]["status"] == "error"
        got = await api.client.get(f"/v1/contacts/{other['id']}", headers=api.h())
        assert got.json()["version"] == 1


class TestConcurrentBatches:
    async def test_same_new_external_id_in_two_batches_is_a_retryable_409(self, api: Any) -> None:
        import asyncio

        items = {
            "items": [
                {"first_name": f"R{i}", "external_ids": {"erp": f"race-{i}"}} for i in range(200)
            ]
        }
        results = await asyncio.gather(
            api.client.post("/v1/contacts/batch", json=items, headers=api.h()),
            api.client.post("/v1/contacts/batch", json=items, headers=api.h()),
        )
        statuses = sorted(r.status_code for r in results)
        assert 500 not in statuses
        assert statuses[0] == 200
        loser = [r for r in results if r.status_code != 200]
        for r in loser:
            assert r.status_code == 409
            assert r.headers["content-type"].startswith("application/problem+json")
        # the retry the 409 asks for succeeds, as updates of the same contacts
        retry = await api.client.post("/v1/contacts/batch", json=items, headers=api.h())
        assert retry.status_code == 200
        assert {i["status"] for i in retry.json()["items"]} == {"updated"}
        rows = await api.sql("SELECT count(*) AS n FROM contacts WHERE first_name LIKE 'R%'")
        assert rows[0]["n"] == 200
