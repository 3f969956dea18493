"""Through the gateway: a write lands in the contacts service, its event crosses NATS, and
the 360 view and timeline show it."""

from __future__ import annotations

from typing import Any

from chassis.testing import wait_for


async def view(platform: Any, cid: str, headers: dict[str, str]) -> dict[str, Any] | None:
    r = await platform.client.get(f"/v1/customers/{cid}/360", headers=headers)
    return r.json() if r.status_code == 200 else None


class TestCreateToView:
    async def test_create_update_and_see_the_360(self, platform: Any) -> None:
        h = platform.infra.auth()
        company = await platform.client.post(
            "/v1/companies", json={"name": "Acme Corp", "domain": "acme.example"}, headers=h
        )
        assert company.status_code == 201, company.text
        created = await platform.client.post(
            "/v1/contacts",
            json={
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "Ada@Example.com",
                "company_id": company.json()["id"],
            },
            headers=h,
        )
        assert created.status_code == 201, created.text
        cid = created.json()["id"]

        doc = await wait_for(lambda: view(platform, cid, h), message="360 document")
        assert doc["contact"]["email"] == "ada@example.com"
        assert doc["company"]["name"] == "Acme Corp"
        for section in ("deals", "orders", "tickets", "campaigns"):
            assert doc[section] == []

        patched = await platform.client.patch(
            f"/v1/contacts/{cid}",
            json={"lifecycle_stage": "customer"},
            headers={**h, "If-Match": created.headers["etag"]},
        )
        assert patched.status_code == 200, patched.text

        async def updated() -> dict[str, Any] | None:
            d = await view(platform, cid, h)
            return d if d and d["contact"]["lifecycle_stage"] == "customer" else None

        doc = await wait_for(updated, message="update in the 360")
        assert doc["versions"]["contact"] == 2

        timeline = await platform.client.get(f"/v1/customers/{cid}/timeline", headers=h)
        kinds = [e["kind"] for e in timeline.json()["items"]]
        assert kinds[:2] == ["contact.updated", "contact.created"]

    async def test_other_tenant_and_other_rep_get_404(self, platform: Any) -> None:
        h = platform.infra.auth()
        created = await platform.client.post(
            "/v1/contacts",
            json={"first_name": "Grace", "email": "grace@example.com", "owner_id": "u-rep1"},
            headers=h,
        )
        cid = created.json()["id"]
        await wait_for(lambda: view(platform, cid, h), message="360 document")
        other_tenant = platform.infra.auth(tenant="globex")
        assert (
            await platform.client.get(f"/v1/contacts/{cid}", headers=other_tenant)
        ).status_code == 404
        assert (
            await platform.client.get(f"/v1/customers/{cid}/360", headers=other_tenant)
        ).status_code == 404
        rep2 = platform.infra.auth(roles=["sales_rep"], sub="u-rep2")
        assert (
            await platform.client.get(f"/v1/customers/{cid}/360", headers=rep2)
        ).status_code == 404
        rep1 = platform.infra.auth(roles=["sales_rep"], sub="u-rep1")
        assert (
            await platform.client.get(f"/v1/customers/{cid}/360", headers=rep1)
        ).status_code == 200

    async def test_bad_input_is_a_problem_and_changes_nothing(self, platform: Any) -> None:
        h = platform.infra.auth()
        r = await platform.client.post(
            "/v1/contacts", json={"first_name": "X", "email": "not-an-email"}, headers=h
        )
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert any("email" in str(e["path"]) for e in r.json()["errors"])
        listed = await platform.client.get("/v1/contacts", headers=h)
        assert listed.json()["items"] == []

    async def test_missing_token_is_401_at_the_gateway(self, platform: Any) -> None:
        r = await platform.client.get("/v1/contacts")
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
