"""Contacts CRUD, validation, visibility and listing through the HTTP API."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from fastapi import FastAPI

from contacts import repository as repo

PROBLEM = "application/problem+json"


def paths(r: Any) -> list[str]:
    assert r.headers["content-type"] == PROBLEM, r.text
    return [".".join(str(p) for p in e["path"]) for e in r.json()["errors"]]


# A contact as a client may send it: the create test checks its normalisation, the read
# test that a GET gives back what the create answered.
ADA: dict[str, Any] = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": " Ada@Example.COM ",
    "phone": "(202) 555-0143",
    "lifecycle_stage": "lead",
    "tags": ["vip", "VIP", " x "],
    "external_ids": {"sap": "42"},
    "consent": {"email_marketing": "granted", "legal_basis": "consent"},
}


class TestReadContact:
    async def rich(self, api: Any) -> dict[str, Any]:
        co = await api.company(name="Engines Ltd")
        await api.field("size", "number")
        await api.field("tier", "enum", options=["gold", "silver"])
        return dict(
            await api.contact(
                **ADA,
                company_id=co["id"],
                owner_id="user-7",
                lead_source="webinar",
                custom_fields={"size": 10.5, "tier": "gold"},
            )
        )

    async def test_a_read_returns_what_the_create_returned(self, api: Any) -> None:
        c = await self.rich(api)
        await api.check_get_returns(f"/v1/contacts/{c['id']}", c)

    async def test_the_raw_read_has_the_shape_of_the_session_read(
        self, api: Any, app: FastAPI
    ) -> None:
        """GET reads on the raw pool (no transaction); writes read through the session. The
        two must give the same row, value for value and type for type."""
        cid = uuid.UUID((await self.rich(api))["id"])
        await api.check_plain_read(app, repo.read_contact, repo.get_contact, cid)


class TestCreateContact:
    async def test_normalizes_and_versions(self, api: Any) -> None:
        co = await api.company(name="Engines Ltd")
        c = await api.contact(**ADA, company_id=co["id"])
        assert c["email"] == "ada@example.com"
        assert c["phone"] == "+12025550143"
        assert c["tags"] == ["vip", "x"]
        assert c["version"] == 1
        assert c["consent"]["email_marketing"] == "granted"
        assert c["consent"]["updated_at"] is not None

    async def test_etag_and_location(self, api: Any) -> None:
        r = await api.client.post("/v1/contacts", json={"first_name": "A"}, headers=api.h())
        assert r.status_code == 201
        assert r.headers["etag"] == '"1"'
        assert r.headers["location"] == f"/v1/contacts/{r.json()['id']}"

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            ({"email": "not-an-email"}, "email"),
            ({"phone": "12"}, "phone"),
            ({"lifecycle_stage": "prospect"}, "lifecycle_stage"),
            ({"company_id": str(uuid.uuid4())}, "company_id"),
            ({"company_id": "nope"}, "company_id"),
            ({"shoe_size": 4}, "shoe_size"),
            ({"tags": [""]}, "tags.0"),
            ({"custom_fields": {"undefined": 1}}, "custom_fields.undefined"),
            ({"external_ids": {"SAP!": "1"}}, "external_ids.SAP!.[key]"),
        ],
    )
    async def test_bad_input_is_422_naming_the_field(
        self, api: Any, body: dict[str, Any], path: str
    ) -> None:
        r = await api.client.post("/v1/contacts", json=body, headers=api.h())
        assert r.status_code == 422, r.text
        assert path in paths(r)
        assert (await api.sql("SELECT count(*) AS n FROM contacts"))[0]["n"] == 0

    async def test_several_errors_at_once(self, api: Any) -> None:
        r = await api.client.post(
            "/v1/contacts", json={"email": "x", "phone": "1"}, headers=api.h()
        )
        assert sorted(paths(r)) == ["email", "phone"]

    async def test_company_of_other_tenant_is_unknown(self, api: Any) -> None:
        co = await api.company(headers=api.h(tenant="globex"))
        r = await api.client.post("/v1/contacts", json={"company_id": co["id"]}, headers=api.h())
        assert r.status_code == 422
        assert paths(r) == ["company_id"]

    @pytest.mark.parametrize(
        ("type_", "bad", "extra"),
        [
            ("text", 1, {}),
            ("number", "ten", {}),
            ("decimal", 1.5, {}),
            ("date", "31/12/2024", {}),
            ("bool", "yes", {}),
            ("enum", "huge", {"options": ["s", "m"]}),
            ("multi_enum", ["s", "x"], {"options": ["s", "m"]}),
            ("email", "nope", {}),
            ("url", "example.com", {}),
        ],
    )
    async def test_bad_custom_field_value_per_type(
        self, api: Any, type_: str, bad: Any, extra: dict[str, Any]
    ) -> None:
        await api.field("size", type_, **extra)
        r = await api.client.post(
            "/v1/contacts", json={"custom_fields": {"size": bad}}, headers=api.h()
        )
        assert r.status_code == 422
        assert paths(r) == ["custom_fields.size"]

    async def test_missing_required_custom_field(self, api: Any) -> None:
        await api.field("tier", "enum", options=["gold"], required=True)
        r = await api.client.post("/v1/contacts", json={"first_name": "A"}, headers=api.h())
        assert r.status_code == 422
        assert paths(r) == ["custom_fields.tier"]
        ok = await api.contact(custom_fields={"tier": "gold"})
        assert ok["custom_fields"] == {"tier": "gold"}

    async def test_rep_becomes_owner_and_cannot_assign_others(self, api: Any) -> None:
        rep = api.h("sales_rep", sub="rep-1")
        c = await api.contact(headers=rep, first_name="Mine")
        assert c["owner_id"] == "rep-1"
        r = await api.client.post("/v1/contacts", json={"owner_id": "rep-2"}, headers=rep)
        assert r.status_code == 422
        assert paths(r) == ["owner_id"]

    async def test_partner_cannot_write(self, api: Any) -> None:
        r = await api.client.post(
            "/v1/contacts", json={"first_name": "A"}, headers=api.h("partner")
        )
        assert r.status_code == 403

    async def test_needs_a_token(self, api: Any) -> None:
        r = await api.client.post("/v1/contacts", json={"first_name": "A"})
        assert r.status_code == 401


class TestGetContact:
    async def test_unknown_is_404(self, api: Any) -> None:
        r = await api.client.get(f"/v1/contacts/{uuid.uuid4()}", headers=api.h())
        assert r.status_code == 404
        assert r.headers["content-type"] == PROBLEM

    async def test_other_tenant_is_404(self, api: Any) -> None:
        c = await api.contact(first_name="A")
        r = await api.client.get(f"/v1/contacts/{c['id']}", headers=api.h(tenant="globex"))
        assert r.status_code == 404

    async def test_rep_sees_only_own(self, api: Any) -> None:
        c = await api.contact(headers=api.h("sales_rep", sub="rep-1"), first_name="A")
        own = await api.client.get(f"/v1/contacts/{c['id']}", headers=api.h("sales_rep", "rep-1"))
        assert own.status_code == 200
        other = await api.client.get(f"/v1/contacts/{c['id']}", headers=api.h("sales_rep", "rep-2"))
        assert other.status_code == 404
        for role in ("sales_manager", "marketer", "support_agent", "erp_sync"):
            r = await api.client.get(f"/v1/contacts/{c['id']}", headers=api.h(role))
            assert r.status_code == 200, role

    async def test_partner_sees_nothing(self, api: Any) -> None:
        c = await api.contact(first_name="A")
        r = await api.client.get(f"/v1/contacts/{c['id']}", headers=api.h("partner"))
        assert r.status_code == 404
        r = await api.client.get("/v1/contacts", headers=api.h("partner"))
        assert r.json() == {"items": [], "next_cursor": None}


class TestUpdateContact:
    async def test_if_match_required_then_checked(self, api: Any) -> None:
        c = await api.contact(first_name="A")
        url = f"/v1/contacts/{c['id']}"
        r = await api.client.patch(url, json={"first_name": "B"}, headers=api.h())
        assert r.status_code == 428
        r = await api.patch(c, first_name="B")
        assert r.status_code == 200
        assert r.json()["version"] == 2
        assert r.headers["etag"] == '"2"'
        stale = await api.patch(c, first_name="C")
        assert stale.status_code == 412
        assert (await api.client.get(url, headers=api.h())).json()["first_name"] == "B"

    async def test_only_sent_fields_change_and_maps_merge(self, api: Any) -> None:
        await api.field("size", "number")
        await api.field("team", "text")
        c = await api.contact(
            first_name="A",
            last_name="L",
            tags=["a"],
            custom_fields={"size": 1, "team": "x"},
            external_ids={"sap": "1"},
        )
        r = await api.patch(
            c,
            last_name=None,
            tags=["b"],
            custom_fields={"size": 2, "team": None},
            external_ids={"crm": "9"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["first_name"] == "A"
        assert body["last_name"] is None
        assert body["tags"] == ["b"]
        assert body["custom_fields"] == {"size": 2}
        assert body["external_ids"] == {"sap": "1", "crm": "9"}

    async def test_no_change_keeps_version(self, api: Any) -> None:
        c = await api.contact(first_name="A")
        r = await api.patch(c, first_name="A")
        assert r.status_code == 200
        assert r.json()["version"] == 1

    async def test_invalid_update_changes_nothing(self, api: Any) -> None:
        c = await api.contact(first_name="A", email="a@x.com")
        r = await api.patch(c, first_name="B", email="broken")
        assert r.status_code == 422
        assert paths(r) == ["email"]
        got = (await api.client.get(f"/v1/contacts/{c['id']}", headers=api.h())).json()
        assert got["first_name"] == "A"
        assert got["version"] == 1

    async def test_rep_cannot_update_others_contact(self, api: Any) -> None:
        c = await api.contact(headers=api.h("sales_rep", sub="rep-1"), first_name="A")
        r = await api.patch(c, headers=api.h("sales_rep", sub="rep-2"), first_name="B")
        assert r.status_code == 404

    async def test_external_id_of_another_contact_is_409(self, api: Any) -> None:
        await api.contact(external_ids={"sap": "1"})
        c = await api.contact(first_name="B")
        r = await api.patch(c, external_ids={"sap": "1"})
        assert r.status_code == 409


class TestDeleteContact:
    async def test_delete_needs_if_match_and_hides_contact(self, api: Any) -> None:
        c = await api.contact(first_name="A", external_ids={"sap": "7"})
        url = f"/v1/contacts/{c['id']}"
        assert (await api.client.delete(url, headers=api.h())).status_code == 428
        r = await api.client.delete(url, headers={**api.h(), "If-Match": '"1"'})
        assert r.status_code == 204
        assert (await api.client.get(url, headers=api.h())).status_code == 404
        assert (await api.client.get("/v1/contacts", headers=api.h())).json()["items"] == []
        # the external id is free again
        await api.contact(external_ids={"sap": "7"})


class TestListContacts:
    async def _seed(self, api: Any) -> dict[str, Any]:
        await api.field("size", "number")
        co = await api.company(name="Globex Industries")
        out = {
            "ada": await api.contact(
                first_name="Ada",
                last_name="Lovelace",
                email="ada@engines.example",
                tags=["vip"],
                lifecycle_stage="customer",
                custom_fields={"size": 10},
            ),
            "bob": await api.contact(
                first_name="Bob",
                last_name="Babbage",
                company_id=co["id"],
                owner_id="rep-1",
                lifecycle_stage="lead",
                custom_fields={"size": 20},
            ),
            "cy": await api.contact(first_name="Cy", last_name="Clarke", email="cy@x.example"),
        }
        out["company"] = co
        return out

    async def _ids(self, api: Any, query: str, headers: Any = None) -> list[str]:
        r = await api.client.get(f"/v1/contacts{query}", headers=headers or api.h())
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["items"]]

    async def test_filters(self, api: Any) -> None:
        s = await self._seed(api)
        ada, bob, cy = s["ada"]["id"], s["bob"]["id"], s["cy"]["id"]
        assert await self._ids(api, "?q=LOVE") == [ada]
        assert await self._ids(api, "?q=engines.example") == [ada]
        assert await self._ids(api, "?q=globex") == [bob]
        assert await self._ids(api, "?q=100%25") == []
        assert await self._ids(api, "?tag=vip") == [ada]
        assert await self._ids(api, "?owner_id=rep-1") == [bob]
        assert await self._ids(api, "?lifecycle_stage=lead") == [bob]
        assert await self._ids(api, f"?company_id={s['company']['id']}") == [bob]
        assert await self._ids(api, "?cf.size=20") == [bob]
        assert set(await self._ids(api, "")) == {ada, bob, cy}

    async def test_updated_after(self, api: Any) -> None:
        s = await self._seed(api)
        r = await api.patch(s["cy"], first_name="Cyrus")
        since = s["bob"]["updated_at"].replace("+00:00", "Z")
        assert await self._ids(api, f"?updated_after={since}") == [s["cy"]["id"]]
        assert r.status_code == 200

    async def test_bad_filters_are_422(self, api: Any) -> None:
        await api.field("size", "number")
        for query, path in [
            ("?cf.size=big", "cf.size"),
            ("?cf.nope=1", "cf.nope"),
            ("?sort=shoe", "sort"),
            ("?limit=0", "query.limit"),
            ("?limit=201", "query.limit"),
            ("?lifecycle_stage=x", "query.lifecycle_stage"),
            ("?cursor=garbage!", "cursor"),
        ]:
            r = await api.client.get(f"/v1/contacts{query}", headers=api.h())
            assert r.status_code == 422, query
            assert path in paths(r), (query, r.json())

    async def test_sort_and_keyset_pagination(self, api: Any) -> None:
        names = ["d", "B", "a", "e", "C"]
        for n in names:
            await api.contact(last_name=n)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            q = "?sort=last_name&limit=2" + (f"&cursor={cursor}" if cursor else "")
            r = await api.client.get(f"/v1/contacts{q}", headers=api.h())
            body = r.json()
            seen += [i["last_name"] for i in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert seen == ["a", "B", "C", "d", "e"]
        assert pages == 3
        r = await api.client.get("/v1/contacts?sort=-created_at&limit=5", headers=api.h())
        assert [i["last_name"] for i in r.json()["items"]] == list(reversed(names))
        first = await api.client.get("/v1/contacts?sort=-updated_at&limit=1", headers=api.h())
        other = await api.client.get(
            f"/v1/contacts?sort=created_at&cursor={first.json()['next_cursor']}", headers=api.h()
        )
        assert other.status_code == 422

    async def test_rep_lists_only_own(self, api: Any) -> None:
        s = await self._seed(api)
        assert await self._ids(api, "", api.h("sales_rep", "rep-1")) == [s["bob"]["id"]]

    async def test_other_tenant_lists_nothing(self, api: Any) -> None:
        await self._seed(api)
        assert await self._ids(api, "", api.h(tenant="globex")) == []


class TestConcurrentUpdates:
    async def test_one_of_two_writers_with_the_same_etag_wins(self, api: Any) -> None:
        c = await api.contact(first_name="A")
        results = await asyncio.gather(api.patch(c, first_name="B"), api.patch(c, first_name="C"))
        assert sorted(r.status_code for r in results) == [200, 412]
