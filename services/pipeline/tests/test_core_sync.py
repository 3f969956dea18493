"""ERP sync: PUT by external id and batch for deals and orders; order reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.core.testkit import CoreApi, new_id


@pytest.fixture
def api(client: Any, crm_infra: Any, db_url: str, app: Any) -> CoreApi:
    return CoreApi(client, crm_infra, db_url, app)


class TestDealUpsert:
    async def test_created_then_updated_then_noop(self, api: CoreApi) -> None:
        p = await api.pipeline()
        url = "/v1/deals/by-external-id/sap/OPP-1"
        body = {"name": "Acme", "pipeline_id": p["id"], "amount": "100.00", "currency": "EUR"}
        r1 = await api.client.put(url, json=body, headers=api.h("erp_sync"))
        assert r1.status_code == 201, r1.text
        assert r1.json()["external_ids"] == {"sap": "OPP-1"}
        assert r1.headers["ETag"] == '"1"'
        r2 = await api.client.put(url, json=body, headers=api.h("erp_sync"))
        assert r2.status_code == 200
        assert (r2.json()["id"], r2.json()["version"]) == (r1.json()["id"], 1)
        r3 = await api.client.put(
            url,
            json={**body, "amount": "150.00", "stage_id": p["stages"][1]["id"]},
            headers=api.h("erp_sync"),
        )
        assert (r3.status_code, r3.json()["version"], r3.json()["amount"]) == (200, 2, "150.00")
        r4 = await api.client.put(
            url,
            json={**body, "amount": "150.00", "stage_id": p["stages"][1]["id"]},
            headers=api.h("erp_sync"),
        )
        assert r4.json()["version"] == 2
        assert (await api.sql("SELECT count(*) AS n FROM deals"))[0]["n"] == 1
        assert (await api.sql("SELECT count(*) AS n FROM deal_stage_history"))[0]["n"] == 2
        outbox = await api.sql(
            "SELECT aggregate_version FROM outbox "
            "WHERE ce_type LIKE 'crm.pipeline.deal.%' ORDER BY created_at"
        )
        assert [r["aggregate_version"] for r in outbox] == [1, 2]

    async def test_bad_input_and_conflicts(self, api: CoreApi) -> None:
        p = await api.pipeline()
        base = {"name": "D", "pipeline_id": p["id"], "currency": "EUR"}
        r = await api.client.put("/v1/deals/by-external-id/SAP!/1", json=base, headers=api.h())
        assert r.status_code == 422
        r = await api.client.put(
            "/v1/deals/by-external-id/sap/1",
            json={**base, "external_ids": {"sap": "2"}},
            headers=api.h(),
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["external_ids", "sap"]
        r = await api.client.put(
            "/v1/deals/by-external-id/sap/1", json={"name": "no pipeline"}, headers=api.h()
        )
        assert r.status_code == 422
        assert {tuple(e["path"]) for e in r.json()["errors"]} == {("pipeline_id",), ("currency",)}
        await api.deal(p, external_ids={"sap": "A"})
        await api.deal(p, external_ids={"hubspot": "B"})
        r = await api.client.put(
            "/v1/deals/by-external-id/sap/A",
            json={"external_ids": {"hubspot": "B"}},
            headers=api.h(),
        )
        assert r.status_code == 409
        r = await api.client.put(
            "/v1/deals/by-external-id/sap/A",
            json={"name": "x"},
            headers={**api.h(), "If-Match": '"9"'},
        )
        assert r.status_code == 412
        assert (await api.sql("SELECT count(*) AS n FROM deals"))[0]["n"] == 2

    async def test_external_id_of_a_deleted_deal_is_free_again(self, api: CoreApi) -> None:
        p = await api.pipeline()
        old = await api.deal(p, external_ids={"sap": "A"})
        await api.client.delete(f"/v1/deals/{old['id']}", headers={**api.h(), "If-Match": '"1"'})
        body = {"name": "Again", "pipeline_id": p["id"], "currency": "EUR"}
        r = await api.client.put("/v1/deals/by-external-id/sap/A", json=body, headers=api.h())
        assert r.status_code == 201
        assert r.json()["id"] != old["id"]
        items = [{"id": old["id"], "name": "zombie"}, {**body, "external_ids": {"sap": "B"}}]
        res = (
            await api.client.post("/v1/deals/batch", json={"items": items}, headers=api.h())
        ).json()
        assert [x["status"] for x in res["items"]] == ["error", "created"]

    async def test_rep_cannot_upsert_other_reps_deal(self, api: CoreApi) -> None:
        p = await api.pipeline()
        await api.deal(p, owner_id="u-rep2", external_ids={"sap": "A"})
        r = await api.client.put(
            "/v1/deals/by-external-id/sap/A",
            json={"name": "mine now"},
            headers=api.h("sales_rep", "u-rep1"),
        )
        assert r.status_code == 404


class TestDealBatch:
    async def test_partial_success(self, api: CoreApi) -> None:
        p = await api.pipeline()
        s = p["stages"]
        other = await api.pipeline("Other")
        existing = await api.deal(p, name="Old")
        items = [
            {
                "name": "A",
                "pipeline_id": p["id"],
                "currency": "USD",
                "amount": "10",
                "external_ids": {"erp": "1"},
            },
            {"name": "B", "pipeline_id": p["id"], "currency": "usd"},
            {"id": existing["id"], "name": "Old renamed", "stage_id": s[1]["id"]},
            {
                "name": "C",
                "pipeline_id": p["id"],
                "currency": "USD",
                "stage_id": other["stages"][0]["id"],
            },
            {"external_ids": {"erp": "1"}, "stage_id": s[2]["id"], "amount": "20"},
            {"bogus": True},
            {"id": new_id(), "name": "ghost"},
            {
                "name": "S",
                "pipeline_id": p["id"],
                "currency": "USD",
                "splits": [{"user_id": "a", "percent": "99"}],
            },
        ]
        r = await api.client.post("/v1/deals/batch", json={"items": items}, headers=api.h())
        assert r.status_code == 200, r.text
        res = r.json()["items"]
        assert [x["status"] for x in res] == [
            "created",
            "error",
            "updated",
            "error",
            "updated",
            "error",
            "error",
            "error",
        ]
        assert res[1]["errors"][0]["path"] == ["currency"]
        assert res[3]["errors"][0]["path"] == ["stage_id"]
        assert res[5]["errors"][0]["path"] == ["bogus"]
        assert res[6]["errors"][0]["path"] == ["id"]
        assert res[7]["errors"][0]["path"] == ["splits"]
        assert (res[2]["id"], res[2]["version"]) == (existing["id"], 2)
        assert (res[4]["id"], res[4]["version"]) == (res[0]["id"], 2)
        a = (await api.client.get(f"/v1/deals/{res[0]['id']}", headers=api.h())).json()
        assert (a["stage_id"], a["amount"], a["version"]) == (s[2]["id"], "20.00", 2)
        # created and moved in one batch: two stays, the first already completed
        hist = await api.sql(
            "SELECT stage_id, to_stage_id, left_at FROM deal_stage_history "
            "WHERE deal_id = $1 ORDER BY id",
            res[0]["id"],
        )
        assert [str(h["stage_id"]) for h in hist] == [s[0]["id"], s[2]["id"]]
        assert str(hist[0]["to_stage_id"]) == s[2]["id"]
        assert hist[1]["left_at"] is None
        assert (await api.sql("SELECT count(*) AS n FROM deals"))[0]["n"] == 2

    async def test_thousand_items_then_replay_is_noop(self, api: CoreApi) -> None:
        p = await api.pipeline()
        items = [
            {
                "name": f"D{i}",
                "pipeline_id": p["id"],
                "currency": "EUR",
                "amount": f"{i}.00",
                "owner_id": f"u{i % 7}",
                "external_ids": {"erp": str(i)},
            }
            for i in range(1000)
        ]
        r = await api.client.post(
            "/v1/deals/batch", json={"items": items}, headers=api.h("erp_sync")
        )
        assert r.status_code == 200
        assert {x["status"] for x in r.json()["items"]} == {"created"}
        again = await api.client.post(
            "/v1/deals/batch", json={"items": items}, headers=api.h("erp_sync")
        )
        assert [x["id"] for x in again.json()["items"]] == [x["id"] for x in r.json()["items"]]
        assert {x["status"] for x in again.json()["items"]} == {"updated"}
        assert {x["version"] for x in again.json()["items"]} == {1}
        counts = await api.sql(
            "SELECT (SELECT count(*) FROM deals) AS d, "
            "(SELECT count(*) FROM deal_external_ids) AS x, "
            "(SELECT count(*) FROM deal_stage_history) AS h"
        )
        assert dict(counts[0]) == {"d": 1000, "x": 1000, "h": 1000}

    async def test_limits_and_roles(self, api: CoreApi) -> None:
        r = await api.client.post("/v1/deals/batch", json={"items": [{}] * 1001}, headers=api.h())
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["items"]
        r = await api.client.post(
            "/v1/deals/batch", json={"items": [{"name": "x"}]}, headers=api.h("partner")
        )
        assert r.status_code == 403


class TestOrders:
    async def test_upsert_lifecycle(self, api: CoreApi) -> None:
        p = await api.pipeline()
        deal = await api.deal(p, owner_id="u-rep1")
        contact = new_id()
        url = "/v1/orders/by-external-id/sap/SO-1"
        body = {
            "contact_id": contact,
            "deal_id": deal["id"],
            "number": "SO-1",
            "ordered_at": "2026-11-20T10:00:00Z",
            "amount": "1200.00",
            "currency": "EUR",
            "lines": [{"product": "Widget", "quantity": "2", "unit_price": "600"}],
        }
        r = await api.client.put(url, json=body, headers=api.h("erp_sync"))
        assert r.status_code == 201, r.text
        o = r.json()
        assert (o["status"], o["owner_id"], o["paid_at"], o["external_ids"]) == (
            "open",
            "u-rep1",
            None,
            {"sap": "SO-1"},
        )
        assert o["lines"] == [
            {"product": "Widget", "quantity": "2", "unit_price": "600.00", "amount": "1200.00"}
        ]
        same = await api.client.put(url, json=body, headers=api.h("erp_sync"))
        assert (same.status_code, same.json()["version"]) == (200, 1)
        paid = await api.client.put(url, json={"status": "paid"}, headers=api.h("erp_sync"))
        assert paid.json()["paid_at"] is not None
        assert paid.json()["version"] == 2
        refunded = await api.client.put(url, json={"status": "refunded"}, headers=api.h("erp_sync"))
        assert refunded.json()["refunded_at"] is not None
        assert refunded.json()["paid_at"] == paid.json()["paid_at"]
        got = await api.client.get(f"/v1/orders/{o['id']}", headers=api.h())
        assert got.json()["status"] == "refunded"
        assert got.headers["ETag"] == '"3"'

    @pytest.mark.parametrize(
        ("patch", "path"),
        [
            ({"contact_id": None}, ["contact_id"]),
            ({"deal_id": "00000000-0000-0000-0000-000000000000"}, ["deal_id"]),
            ({"amount": "-5"}, ["amount"]),
            ({"currency": "eur"}, ["currency"]),
            ({"status": "shipped"}, ["status"]),
            ({"status": "open", "paid_at": "2026-11-20T10:00:00Z"}, ["paid_at"]),
            ({"status": "paid", "paid_at": "2999-01-01T00:00:00Z"}, ["paid_at"]),
            ({"ordered_at": None}, ["ordered_at"]),
            (
                {"lines": [{"product": "x", "quantity": "0", "unit_price": "1"}]},
                ["lines", 0, "quantity"],
            ),
        ],
    )
    async def test_bad_input(self, api: CoreApi, patch: dict[str, Any], path: list[Any]) -> None:
        body = {
            "contact_id": new_id(),
            "ordered_at": "2026-11-20T10:00:00Z",
            "amount": "10.00",
            "currency": "EUR",
            **patch,
        }
        r = await api.client.put("/v1/orders/by-external-id/sap/1", json=body, headers=api.h())
        assert r.status_code == 422, r.text
        assert path in [e["path"] for e in r.json()["errors"]]
        assert (await api.sql("SELECT count(*) AS n FROM orders"))[0]["n"] == 0

    async def test_only_erp_roles_write(self, api: CoreApi) -> None:
        body = {
            "company_id": new_id(),
            "ordered_at": "2026-11-20T10:00:00Z",
            "amount": "1",
            "currency": "EUR",
        }
        for role in ("sales_rep", "sales_manager"):
            r = await api.client.put(
                "/v1/orders/by-external-id/sap/1", json=body, headers=api.h(role)
            )
            assert r.status_code == 403

    async def test_batch_and_visibility(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d1 = await api.deal(p, owner_id="u-rep1")
        d2 = await api.deal(p, owner_id="u-rep2")
        c = new_id()
        base = {"ordered_at": "2026-11-20T10:00:00Z", "currency": "USD"}
        items = [
            {
                **base,
                "contact_id": c,
                "deal_id": d1["id"],
                "amount": "10",
                "status": "paid",
                "external_ids": {"sap": "1"},
            },
            {
                **base,
                "contact_id": c,
                "deal_id": d2["id"],
                "amount": "20",
                "external_ids": {"sap": "2"},
            },
            {**base, "company_id": new_id(), "amount": "30", "external_ids": {"sap": "3"}},
            {**base, "amount": "40", "external_ids": {"sap": "4"}},
            {"external_ids": {"sap": "1"}, "number": "SO-1"},
        ]
        r = await api.client.post(
            "/v1/orders/batch", json={"items": items}, headers=api.h("erp_sync")
        )
        res = r.json()["items"]
        assert [x["status"] for x in res] == ["created", "created", "created", "error", "updated"]
        assert res[3]["errors"][0]["path"] == ["contact_id"]
        assert res[4]["version"] == 2

        async def ids(headers: dict[str, str], query: str = "") -> list[str]:
            r = await api.client.get(f"/v1/orders{query}", headers=headers)
            assert r.status_code == 200, r.text
            return [o["id"] for o in r.json()["items"]]

        assert await ids(api.h()) == [res[0]["id"], res[1]["id"], res[2]["id"]]
        assert await ids(api.h("sales_rep", "u-rep1")) == [res[0]["id"]]
        assert await ids(api.h(), f"?contact_id={c}&status=paid") == [res[0]["id"]]
        assert await ids(api.h(), f"?deal_id={d2['id']}") == [res[1]["id"]]
        r = await api.client.get(f"/v1/orders/{res[1]['id']}", headers=api.h("sales_rep", "u-rep1"))
        assert r.status_code == 404
        first = (await api.client.get("/v1/orders?limit=2", headers=api.h())).json()
        rest = (
            await api.client.get(
                f"/v1/orders?limit=2&cursor={first['next_cursor']}", headers=api.h()
            )
        ).json()
        assert len(first["items"]) == 2
        assert [o["id"] for o in rest["items"]] == [res[2]["id"]]


class TestConcurrency:
    async def test_two_batches_creating_the_same_external_ids(self, api: CoreApi) -> None:
        p = await api.pipeline()
        items = {
            "items": [
                {
                    "name": f"R{i}",
                    "pipeline_id": p["id"],
                    "currency": "EUR",
                    "external_ids": {"erp": f"r{i}"},
                }
                for i in range(100)
            ]
        }
        results = await asyncio.gather(
            api.client.post("/v1/deals/batch", json=items, headers=api.h()),
            api.client.post("/v1/deals/batch", json=items, headers=api.h()),
        )
        statuses = sorted(r.status_code for r in results)
        assert statuses[0] == 200
        assert statuses[1] in (200, 409)
        assert (await api.sql("SELECT count(*) AS n FROM deals"))[0]["n"] == 100
