"""Companies through the HTTP API."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI

from contacts import repository as repo


def paths(r: Any) -> list[str]:
    return [".".join(str(p) for p in e["path"]) for e in r.json()["errors"]]


class TestReadCompany:
    async def rich(self, api: Any) -> dict[str, Any]:
        await api.field("region", "text", object_type="company")
        return dict(
            await api.company(
                name="Engines",
                domain="engines.example",
                industry="manufacturing",
                employees=12,
                annual_revenue={"amount": "1234567.10", "currency": "EUR"},
                owner_id="user-7",
                tags=["key", "emea"],
                custom_fields={"region": "north"},
                external_ids={"sap": "C-1"},
            )
        )

    async def test_a_read_returns_what_the_create_returned(self, api: Any) -> None:
        c = await self.rich(api)
        await api.check_get_returns(f"/v1/companies/{c['id']}", c)

    async def test_the_raw_read_has_the_shape_of_the_session_read(
        self, api: Any, app: FastAPI
    ) -> None:
        cid = uuid.UUID((await self.rich(api))["id"])
        await api.check_plain_read(app, repo.read_company, repo.get_company, cid)


class TestCreateCompany:
    async def test_normalizes_domain_and_keeps_money_exact(self, api: Any) -> None:
        c = await api.company(
            name="Engines",
            domain="https://www.Engines.Example/about",
            employees=12,
            annual_revenue={"amount": "1234567.10", "currency": "EUR"},
        )
        assert c["domain"] == "engines.example"
        assert c["annual_revenue"] == {"amount": "1234567.10", "currency": "EUR"}
        assert c["version"] == 1

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            ({}, "name"),
            ({"name": "X", "domain": "not a domain"}, "domain"),
            (
                {"name": "X", "annual_revenue": {"amount": 12.5, "currency": "EUR"}},
                "annual_revenue.amount",
            ),
            (
                {"name": "X", "annual_revenue": {"amount": "12.5", "currency": "euro"}},
                "annual_revenue.currency",
            ),
            ({"name": "X", "employees": -1}, "employees"),
            ({"name": "X", "custom_fields": {"nope": 1}}, "custom_fields.nope"),
        ],
    )
    async def test_bad_input(self, api: Any, body: dict[str, Any], path: str) -> None:
        r = await api.client.post("/v1/companies", json=body, headers=api.h())
        assert r.status_code == 422, r.text
        assert path in paths(r)

    async def test_company_custom_fields_validated(self, api: Any) -> None:
        await api.field("tier", "enum", object_type="company", options=["a", "b"])
        r = await api.client.post(
            "/v1/companies", json={"name": "X", "custom_fields": {"tier": "c"}}, headers=api.h()
        )
        assert r.status_code == 422
        assert paths(r) == ["custom_fields.tier"]
        ok = await api.company(name="Y", custom_fields={"tier": "a"})
        assert ok["custom_fields"] == {"tier": "a"}


class TestCompanyReadUpdateDelete:
    async def test_get_patch_delete(self, api: Any) -> None:
        c = await api.company(name="Old")
        url = f"/v1/companies/{c['id']}"
        assert (await api.client.get(url, headers=api.h())).headers["etag"] == '"1"'
        assert (
            await api.client.patch(url, json={"name": "New"}, headers=api.h())
        ).status_code == 428
        r = await api.client.patch(
            url, json={"name": "New"}, headers={**api.h(), "If-Match": '"1"'}
        )
        assert r.status_code == 200
        assert r.json()["version"] == 2
        assert (
            await api.client.patch(url, json={"name": "X"}, headers={**api.h(), "If-Match": '"1"'})
        ).status_code == 412
        r = await api.client.delete(url, headers={**api.h(), "If-Match": '"2"'})
        assert r.status_code == 204
        assert (await api.client.get(url, headers=api.h())).status_code == 404

    async def test_delete_with_contacts_is_409(self, api: Any) -> None:
        c = await api.company(name="Busy")
        await api.contact(company_id=c["id"])
        r = await api.client.delete(
            f"/v1/companies/{c['id']}", headers={**api.h(), "If-Match": '"1"'}
        )
        assert r.status_code == 409

    async def test_visibility(self, api: Any) -> None:
        c = await api.company(headers=api.h("sales_rep", "rep-1"), name="Mine")
        assert c["owner_id"] == "rep-1"
        url = f"/v1/companies/{c['id']}"
        assert (await api.client.get(url, headers=api.h("sales_rep", "rep-2"))).status_code == 404
        assert (await api.client.get(url, headers=api.h(tenant="globex"))).status_code == 404
        assert (await api.client.get(url, headers=api.h("partner"))).status_code == 404
        assert (await api.client.get(url, headers=api.h("marketer"))).status_code == 200
        assert (
            await api.client.post("/v1/companies", json={"name": "P"}, headers=api.h("partner"))
        ).status_code == 403
        assert (
            await api.client.get(f"/v1/companies/{uuid.uuid4()}", headers=api.h())
        ).status_code == 404

    async def test_list_search_and_paginate(self, api: Any) -> None:
        for n in ("Alpha", "Beta", "Gamma"):
            await api.company(name=n, domain=f"{n.lower()}.example")
        r = await api.client.get("/v1/companies?q=eta", headers=api.h())
        assert [i["name"] for i in r.json()["items"]] == ["Beta"]
        r = await api.client.get("/v1/companies?sort=-name&limit=2", headers=api.h())
        body = r.json()
        assert [i["name"] for i in body["items"]] == ["Gamma", "Beta"]
        r = await api.client.get(
            f"/v1/companies?sort=-name&limit=2&cursor={body['next_cursor']}", headers=api.h()
        )
        assert [i["name"] for i in r.json()["items"]] == ["Alpha"]
        assert r.json()["next_cursor"] is None


class TestUpsertCompanyByExternalId:
    async def test_created_then_updated_same_id(self, api: Any) -> None:
        url = "/v1/companies/by-external-id/sap/C-1"
        r1 = await api.client.put(url, json={"name": "Acme"}, headers=api.h())
        assert r1.status_code == 201
        assert r1.json()["external_ids"] == {"sap": "C-1"}
        r2 = await api.client.put(url, json={"name": "Acme Inc"}, headers=api.h())
        assert r2.status_code == 200
        assert r2.json()["id"] == r1.json()["id"]
        assert r2.json()["version"] == 2
        r3 = await api.client.put(url, json={"name": "Acme Inc"}, headers=api.h())
        assert r3.status_code == 200
        assert r3.json()["version"] == 2

    async def test_ambiguous_is_409(self, api: Any) -> None:
        await api.client.put(
            "/v1/companies/by-external-id/sap/A", json={"name": "A"}, headers=api.h()
        )
        await api.client.put(
            "/v1/companies/by-external-id/hubspot/B", json={"name": "B"}, headers=api.h()
        )
        r = await api.client.put(
            "/v1/companies/by-external-id/sap/A",
            json={"name": "A", "external_ids": {"hubspot": "B"}},
            headers=api.h(),
        )
        assert r.status_code == 409
