"""Deals: create, read, list, update, stage moves, won/lost/reopen with stage history,
delete; validation and visibility."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.core.testkit import CoreApi, new_id


@pytest.fixture
def api(client: Any, crm_infra: Any, db_url: str, app: Any) -> CoreApi:
    return CoreApi(client, crm_infra, db_url, app)


def m(version: int) -> dict[str, str]:
    return {"If-Match": f'"{version}"'}


async def count_deals(api: CoreApi) -> int:
    return int((await api.sql("SELECT count(*) AS n FROM deals"))[0]["n"])


class TestCreate:
    async def test_contract_example(self, api: CoreApi) -> None:
        p = await api.pipeline()
        await api.define_field("region", "enum", options=["emea", "amer"])
        contact = new_id()
        body = {
            "name": "Acme renewal",
            "contact_id": contact,
            "owner_id": "u-rep1",
            "pipeline_id": p["id"],
            "stage_id": p["stages"][1]["id"],
            "currency": "USD",
            "expected_close_date": "2027-02-15",
            "forecast_category": "best_case",
            "splits": [
                {"user_id": "u-rep1", "percent": "60"},
                {"user_id": "u-rep2", "percent": "40"},
            ],
            "line_items": [
                {"product": "License", "quantity": 1, "unit_price": "9000.00"},
                {
                    "product": "Support",
                    "quantity": "2",
                    "unit_price": "600",
                    "discount_percent": "16.5",
                },
            ],
            "custom_fields": {"region": "emea"},
            "external_ids": {"sap": "OPP-1"},
        }
        r = await api.client.post("/v1/deals", json=body, headers=api.h())
        assert r.status_code == 201, r.text
        d = r.json()
        assert r.headers["ETag"] == '"1"'
        assert d["amount"] == "10002.00"  # 9000 + 2 x 600 x 0.835
        assert [li["amount"] for li in d["line_items"]] == ["9000.00", "1002.00"]
        assert d["line_items"][1]["discount_percent"] == "16.5"
        assert d["stage_name"] == "Proposal"
        assert d["forecast_category"] == "best_case"
        assert d["effective_forecast_category"] == "best_case"
        assert d["splits"] == [
            {"user_id": "u-rep1", "percent": "60"},
            {"user_id": "u-rep2", "percent": "40"},
        ]
        assert d["status"] == "open"
        assert d["closed_at"] is None
        assert (d["contact_id"], d["owner_id"], d["version"]) == (contact, "u-rep1", 1)
        assert d["custom_fields"] == {"region": "emea"}
        got = await api.client.get(f"/v1/deals/{d['id']}", headers=api.h())
        assert got.json() == d
        hist = await api.sql(
            "SELECT stage_id, from_stage_id, entered_by, amount, currency, left_at "
            "FROM deal_stage_history WHERE deal_id = $1",
            d["id"],
        )
        assert len(hist) == 1
        assert str(hist[0]["stage_id"]) == p["stages"][1]["id"]
        assert hist[0]["from_stage_id"] is None
        assert hist[0]["left_at"] is None
        assert (str(hist[0]["amount"]), hist[0]["currency"]) == ("10002.00", "USD")
        assert hist[0]["entered_by"] == "user-1"

    async def test_defaults(self, api: CoreApi) -> None:
        p = await api.pipeline()
        r = await api.client.post(
            "/v1/deals",
            json={"name": "Small", "pipeline_id": p["id"], "currency": "JPY"},
            headers=api.h("sales_rep", "u-rep1"),
        )
        d = r.json()
        assert r.status_code == 201
        assert d["owner_id"] == "u-rep1"  # the caller
        assert d["stage_id"] == p["stages"][0]["id"]  # the first open stage
        assert d["amount"] == "0"
        assert d["forecast_category"] is None
        assert d["effective_forecast_category"] == "pipeline"

    @pytest.mark.parametrize(
        ("patch", "path"),
        [
            ({"amount": "-1.00"}, ["amount"]),
            ({"amount": "1e5"}, ["amount"]),
            ({"amount": 10.5}, ["amount"]),
            ({"currency": "usd"}, ["currency"]),
            ({"currency": "ABC"}, ["currency"]),
            ({"currency": "JPY", "amount": "10.50"}, ["amount"]),
            (
                {"splits": [{"user_id": "a", "percent": "60"}, {"user_id": "b", "percent": "30"}]},
                ["splits"],
            ),
            (
                {"splits": [{"user_id": "a", "percent": "50"}, {"user_id": "a", "percent": "50"}]},
                ["splits", 1, "user_id"],
            ),
            (
                {
                    "splits": [
                        {"user_id": "a", "percent": "110"},
                        {"user_id": "b", "percent": "-10"},
                    ]
                },
                ["splits", 0, "percent"],
            ),
            ({"line_items": [{"product": "x", "quantity": "1", "unit_price": "11"}]}, ["amount"]),
            (
                {
                    "line_items": [{"product": "x", "quantity": "0", "unit_price": "10"}],
                    "amount": None,
                },
                ["amount"],
            ),
            (
                {"line_items": [{"product": "x", "unit_price": "-1"}]},
                ["line_items", 0, "unit_price"],
            ),
            (
                {"line_items": [{"product": "x", "unit_price": "1", "discount_percent": "101"}]},
                ["line_items", 0, "discount_percent"],
            ),
            ({"name": None}, ["name"]),
            ({"pipeline_id": None}, ["pipeline_id"]),
            ({"forecast_category": "maybe"}, ["forecast_category"]),
            ({"custom_fields": {"nope": 1}}, ["custom_fields", "nope"]),
            ({"custom_fields": {"size": "big"}}, ["custom_fields", "size"]),
            ({"unknown": 1}, ["unknown"]),
        ],
    )
    async def test_bad_input_changes_nothing(
        self, api: CoreApi, patch: dict[str, Any], path: list[Any]
    ) -> None:
        p = await api.pipeline()
        await api.define_field("size", "number")
        body = {"name": "D", "pipeline_id": p["id"], "amount": "10.00", "currency": "USD", **patch}
        r = await api.client.post("/v1/deals", json=body, headers=api.h())
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert path in [e["path"] for e in r.json()["errors"]], r.json()
        assert await count_deals(api) == 0
        assert (await api.sql("SELECT count(*) AS n FROM outbox WHERE ce_type LIKE '%deal%'"))[0][
            "n"
        ] == 0

    async def test_stage_from_another_pipeline(self, api: CoreApi) -> None:
        p1 = await api.pipeline("One")
        p2 = await api.pipeline("Two")
        r = await api.client.post(
            "/v1/deals",
            json={
                "name": "D",
                "pipeline_id": p1["id"],
                "stage_id": p2["stages"][0]["id"],
                "currency": "EUR",
            },
            headers=api.h(),
        )
        assert r.status_code == 422
        assert r.json()["errors"] == [
            {"path": ["stage_id"], "message": f"is not a stage of pipeline {p1['id']}"}
        ]
        assert await count_deals(api) == 0

    async def test_required_custom_field(self, api: CoreApi) -> None:
        p = await api.pipeline()
        await api.define_field("region", "text", required=True)
        r = await api.client.post(
            "/v1/deals",
            json={"name": "D", "pipeline_id": p["id"], "currency": "EUR"},
            headers=api.h(),
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["custom_fields", "region"]

    async def test_cannot_create_in_won_stage(self, api: CoreApi) -> None:
        p = await api.pipeline()
        r = await api.client.post(
            "/v1/deals",
            json={
                "name": "D",
                "pipeline_id": p["id"],
                "stage_id": p["stages"][3]["id"],
                "currency": "EUR",
            },
            headers=api.h(),
        )
        assert r.status_code == 422
        assert "/won" in r.json()["errors"][0]["message"]


class TestVisibility:
    async def test_rep_sees_and_writes_own_deals_only(self, api: CoreApi) -> None:
        p = await api.pipeline()
        mine = await api.deal(p, owner_id="u-rep1")
        theirs = await api.deal(p, owner_id="u-rep2")
        rep1 = api.h("sales_rep", "u-rep1")
        assert (await api.client.get(f"/v1/deals/{mine['id']}", headers=rep1)).status_code == 200
        r = await api.client.get(f"/v1/deals/{theirs['id']}", headers=rep1)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        r = await api.client.patch(
            f"/v1/deals/{theirs['id']}", json={"name": "x"}, headers={**rep1, **m(1)}
        )
        assert r.status_code == 404
        r = await api.client.post(f"/v1/deals/{theirs['id']}/won", json={}, headers=rep1)
        assert r.status_code == 404
        listed = await api.client.get("/v1/deals", headers=rep1)
        assert [d["id"] for d in listed.json()["items"]] == [mine["id"]]

    async def test_rep_cannot_create_for_others(self, api: CoreApi) -> None:
        p = await api.pipeline()
        r = await api.client.post(
            "/v1/deals",
            json={"name": "D", "pipeline_id": p["id"], "currency": "USD", "owner_id": "u-rep2"},
            headers=api.h("sales_rep", "u-rep1"),
        )
        assert r.status_code == 403
        assert await count_deals(api) == 0

    async def test_manager_sees_managed_teams_and_sub_teams(self, api: CoreApi) -> None:
        east = await api.team(
            "East", [{"user_id": "u-mgr", "role": "manager"}, {"user_id": "u-rep1", "role": "rep"}]
        )
        await api.team("East-North", [{"user_id": "u-rep2", "role": "rep"}], parent_id=east["id"])
        await api.team("West", [{"user_id": "u-rep3", "role": "rep"}])
        p = await api.pipeline()
        deals = {o: await api.deal(p, owner_id=o) for o in ("u-rep1", "u-rep2", "u-rep3", "u-mgr")}
        mgr = api.h("sales_manager", "u-mgr")
        listed = await api.client.get("/v1/deals", headers=mgr)
        assert {d["owner_id"] for d in listed.json()["items"]} == {"u-rep1", "u-rep2", "u-mgr"}
        r = await api.client.get(f"/v1/deals/{deals['u-rep3']['id']}", headers=mgr)
        assert r.status_code == 404
        ok = await api.client.post(
            "/v1/deals",
            json={"name": "D", "pipeline_id": p["id"], "currency": "USD", "owner_id": "u-rep2"},
            headers=mgr,
        )
        assert ok.status_code == 201
        no = await api.client.post(
            "/v1/deals",
            json={"name": "D", "pipeline_id": p["id"], "currency": "USD", "owner_id": "u-rep3"},
            headers=mgr,
        )
        assert no.status_code == 403
        # reassigning a visible deal to someone outside the scope is refused too
        r = await api.client.patch(
            f"/v1/deals/{deals['u-rep1']['id']}",
            json={"owner_id": "u-rep3"},
            headers={**mgr, **m(1)},
        )
        assert r.status_code == 403
        admin = await api.client.get("/v1/deals", headers=api.h())
        assert len(admin.json()["items"]) == 5

    async def test_other_tenant_and_marketer(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d = await api.deal(p)
        r = await api.client.get(f"/v1/deals/{d['id']}", headers=api.h(tenant="globex"))
        assert r.status_code == 404
        r = await api.client.post(
            "/v1/deals",
            json={"name": "D", "pipeline_id": p["id"], "currency": "USD"},
            headers=api.h("marketer"),
        )
        assert r.status_code == 403


class TestUpdate:
    async def test_patch_fields_and_concurrency(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d = await api.deal(p, custom_fields={}, external_ids={"sap": "1"})
        url = f"/v1/deals/{d['id']}"
        assert (await api.client.patch(url, json={"name": "x"}, headers=api.h())).status_code == 428
        r = await api.client.patch(url, json={"name": "x"}, headers={**api.h(), **m(5)})
        assert r.status_code == 412
        r = await api.client.patch(
            url,
            json={
                "name": "Bigger",
                "amount": "2500.50",
                "external_ids": {"sap": None, "hubspot": "9"},
            },
            headers={**api.h(), **m(1)},
        )
        assert r.status_code == 200, r.text
        assert r.headers["ETag"] == '"2"'
        out = r.json()
        assert (out["name"], out["amount"], out["external_ids"]) == (
            "Bigger",
            "2500.50",
            {"hubspot": "9"},
        )
        rows = await api.sql("SELECT system, external_id FROM deal_external_ids")
        assert [(x["system"], x["external_id"]) for x in rows] == [("hubspot", "9")]
        same = await api.client.patch(url, json={"name": "Bigger"}, headers={**api.h(), **m(2)})
        assert same.json()["version"] == 2

    async def test_line_items_drive_amount(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d = await api.deal(p, line_items=[{"product": "a", "quantity": "3", "unit_price": "10"}])
        assert d["amount"] == "30.00"
        url = f"/v1/deals/{d['id']}"
        r = await api.client.patch(url, json={"amount": "99.00"}, headers={**api.h(), **m(1)})
        assert r.status_code == 422  # the amount derives from the line items
        r = await api.client.patch(url, json={"currency": "JPY"}, headers={**api.h(), **m(1)})
        assert r.json()["amount"] == "30"
        r = await api.client.patch(
            url, json={"line_items": [], "amount": "5"}, headers={**api.h(), **m(2)}
        )
        assert (r.json()["amount"], r.json()["line_items"]) == ("5", [])

    async def test_stage_moves_record_history_and_reset_override(self, api: CoreApi) -> None:
        p = await api.pipeline()
        s = p["stages"]
        d = await api.deal(p, forecast_category="commit")
        url = f"/v1/deals/{d['id']}"
        r = await api.client.patch(url, json={"stage_id": s[1]["id"]}, headers={**api.h(), **m(1)})
        assert r.status_code == 200
        assert (r.json()["stage_name"], r.json()["forecast_category"]) == ("Proposal", None)
        assert r.json()["effective_forecast_category"] == "best_case"
        r = await api.client.patch(
            url,
            json={"stage_id": s[2]["id"], "forecast_category": "best_case", "amount": "1500.00"},
            headers={**api.h(), **m(2)},
        )
        assert r.json()["forecast_category"] == "best_case"
        hist = await api.sql(
            "SELECT stage_id, from_stage_id, to_stage_id, left_at, amount FROM deal_stage_history "
            "WHERE deal_id = $1 ORDER BY id",
            d["id"],
        )
        assert [str(h["stage_id"]) for h in hist] == [s[0]["id"], s[1]["id"], s[2]["id"]]
        assert [h["from_stage_id"] and str(h["from_stage_id"]) for h in hist] == [
            None,
            s[0]["id"],
            s[1]["id"],
        ]
        assert [h["to_stage_id"] and str(h["to_stage_id"]) for h in hist] == [
            s[1]["id"],
            s[2]["id"],
            None,
        ]
        assert hist[0]["left_at"] is not None
        assert hist[2]["left_at"] is None
        assert str(hist[2]["amount"]) == "1500.00"

    async def test_patch_into_won_or_lost_stage_is_422(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d = await api.deal(p)
        for stage, word in ((p["stages"][3], "won"), (p["stages"][4], "lost")):
            r = await api.client.patch(
                f"/v1/deals/{d['id']}", json={"stage_id": stage["id"]}, headers={**api.h(), **m(1)}
            )
            assert r.status_code == 422
            assert r.json()["errors"][0]["path"] == ["stage_id"]
            assert f"/{word}" in r.json()["errors"][0]["message"]

    async def test_move_to_another_pipeline(self, api: CoreApi) -> None:
        p1 = await api.pipeline("One")
        p2 = await api.pipeline("Two")
        d = await api.deal(p1)
        r = await api.client.patch(
            f"/v1/deals/{d['id']}", json={"pipeline_id": p2["id"]}, headers={**api.h(), **m(1)}
        )
        assert (r.json()["pipeline_id"], r.json()["stage_id"]) == (p2["id"], p2["stages"][0]["id"])
        hist = await api.sql("SELECT pipeline_id FROM deal_stage_history ORDER BY id")
        assert [str(h["pipeline_id"]) for h in hist] == [p1["id"], p2["id"]]


class TestWonLostReopen:
    async def test_won_with_closed_at_then_reopen(self, api: CoreApi) -> None:
        p = await api.pipeline()
        s = p["stages"]
        d = await api.deal(p, stage_id=s[2]["id"], forecast_category="best_case")
        closed = "2026-11-20T10:00:00Z"
        r = await api.client.post(
            f"/v1/deals/{d['id']}/won", json={"closed_at": closed}, headers=api.h()
        )
        assert r.status_code == 200, r.text
        won = r.json()
        assert (won["status"], won["stage_id"], won["closed_at"]) == (
            "won",
            s[3]["id"],
            "2026-11-20T10:00:00Z",
        )
        assert won["effective_forecast_category"] == "closed"
        assert won["forecast_category"] is None
        assert r.headers["ETag"] == '"2"'
        again = await api.client.post(f"/v1/deals/{d['id']}/lost", json={}, headers=api.h())
        assert again.status_code == 409
        r = await api.client.post(f"/v1/deals/{d['id']}/reopen", json={}, headers=api.h())
        assert r.status_code == 200
        assert (r.json()["status"], r.json()["stage_id"], r.json()["closed_at"]) == (
            "open",
            s[2]["id"],
            None,
        )
        hist = await api.sql(
            "SELECT stage_id, from_stage_id, to_stage_id, entered_at, left_at "
            "FROM deal_stage_history "
            "WHERE deal_id = $1 ORDER BY id",
            d["id"],
        )
        assert [str(h["stage_id"]) for h in hist] == [s[2]["id"], s[3]["id"], s[2]["id"]]
        won_stay = hist[1]
        assert won_stay["entered_at"] == datetime(2026, 11, 20, 10, tzinfo=UTC)
        assert str(won_stay["from_stage_id"]) == s[2]["id"]
        assert str(won_stay["to_stage_id"]) == s[2]["id"]
        assert won_stay["left_at"] is not None
        # the synced-after-the-fact close lies before the stay began: no negative duration
        assert hist[0]["left_at"] >= hist[0]["entered_at"]

    async def test_lost_with_reason_and_reopen_into_given_stage(self, api: CoreApi) -> None:
        p = await api.pipeline()
        s = p["stages"]
        d = await api.deal(p)
        r = await api.client.post(
            f"/v1/deals/{d['id']}/lost", json={"lost_reason": "price"}, headers={**api.h(), **m(1)}
        )
        assert (r.json()["status"], r.json()["lost_reason"], r.json()["stage_id"]) == (
            "lost",
            "price",
            s[4]["id"],
        )
        assert r.json()["closed_at"] is not None
        bad = await api.client.post(
            f"/v1/deals/{d['id']}/reopen", json={"stage_id": s[3]["id"]}, headers=api.h()
        )
        assert bad.status_code == 422
        r = await api.client.post(
            f"/v1/deals/{d['id']}/reopen", json={"stage_id": s[1]["id"]}, headers=api.h()
        )
        assert (r.json()["stage_id"], r.json()["lost_reason"], r.json()["version"]) == (
            s[1]["id"],
            None,
            3,
        )
        assert (
            await api.client.post(f"/v1/deals/{d['id']}/reopen", json={}, headers=api.h())
        ).status_code == 409

    async def test_closed_at_in_future_is_422(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d = await api.deal(p)
        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        r = await api.client.post(
            f"/v1/deals/{d['id']}/won", json={"closed_at": future}, headers=api.h()
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["closed_at"]
        got = await api.client.get(f"/v1/deals/{d['id']}", headers=api.h())
        assert (got.json()["status"], got.json()["version"]) == ("open", 1)
        stale = await api.client.post(
            f"/v1/deals/{d['id']}/won", json={}, headers={**api.h(), **m(7)}
        )
        assert stale.status_code == 412

    async def test_closed_deal_cannot_move_by_patch(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d = await api.deal(p)
        await api.client.post(f"/v1/deals/{d['id']}/won", json={}, headers=api.h())
        r = await api.client.patch(
            f"/v1/deals/{d['id']}",
            json={"stage_id": p["stages"][0]["id"]},
            headers={**api.h(), **m(2)},
        )
        assert r.status_code == 422
        assert "reopen" in r.json()["errors"][0]["message"]
        r = await api.client.patch(
            f"/v1/deals/{d['id']}", json={"name": "renamed"}, headers={**api.h(), **m(2)}
        )
        assert r.status_code == 200

    async def test_stage_history_endpoint(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d = await api.deal(p)
        await api.client.post(f"/v1/deals/{d['id']}/won", json={}, headers=api.h())
        r = await api.client.get(f"/v1/deals/{d['id']}/stage-history", headers=api.h())
        items = r.json()["items"]
        assert [i["stage_id"] for i in items] == [p["stages"][0]["id"], p["stages"][3]["id"]]
        assert items[0]["to_stage_id"] == p["stages"][3]["id"]
        assert items[1]["amount"] == "1000.00"
        r = await api.client.get(
            f"/v1/deals/{d['id']}/stage-history", headers=api.h("sales_rep", "x")
        )
        assert r.status_code == 404


class TestListAndDelete:
    async def test_filters_and_pagination(self, api: CoreApi) -> None:
        p = await api.pipeline()
        s = p["stages"]
        company, contact = new_id(), new_id()
        a = await api.deal(
            p,
            owner_id="u1",
            expected_close_date="2027-01-10",
            company_id=company,
            contact_id=contact,
        )
        b = await api.deal(p, owner_id="u2", expected_close_date="2027-03-10", stage_id=s[1]["id"])
        c = await api.deal(p, owner_id="u1", expected_close_date="2027-02-10")
        await api.client.post(f"/v1/deals/{c['id']}/lost", json={}, headers=api.h())

        async def ids(query: str) -> list[str]:
            r = await api.client.get(f"/v1/deals?{query}", headers=api.h())
            assert r.status_code == 200, r.text
            return [d["id"] for d in r.json()["items"]]

        assert await ids("owner_id=u1") == [a["id"], c["id"]]
        assert await ids(f"pipeline_id={p['id']}") == [a["id"], b["id"], c["id"]]
        assert await ids(f"pipeline_id={new_id()}") == []
        since = (await api.sql("SELECT updated_at FROM deals WHERE id = $1", c["id"]))[0][0]
        assert await ids("updated_since=" + since.isoformat().replace("+00:00", "Z")) == [c["id"]]
        assert await ids(f"stage_id={s[1]['id']}") == [b["id"]]
        assert await ids("status=lost") == [c["id"]]
        assert await ids(f"company_id={company}") == [a["id"]]
        assert await ids(f"contact_id={contact}&status=open") == [a["id"]]
        assert await ids("expected_close_from=2027-02-01&expected_close_to=2027-03-31") == [
            b["id"],
            c["id"],
        ]
        assert await ids("sort=-created_at") == [c["id"], b["id"], a["id"]]
        assert await ids("sort=-updated_at&limit=1") == [c["id"]]
        page1 = (await api.client.get("/v1/deals?limit=2", headers=api.h())).json()
        page2 = (
            await api.client.get(
                f"/v1/deals?limit=2&cursor={page1['next_cursor']}", headers=api.h()
            )
        ).json()
        assert [d["id"] for d in page1["items"] + page2["items"]] == [a["id"], b["id"], c["id"]]
        assert page2["next_cursor"] is None
        bad = await api.client.get(
            f"/v1/deals?sort=-created_at&cursor={page1['next_cursor']}", headers=api.h()
        )
        assert bad.status_code == 422
        assert (await api.client.get("/v1/deals?status=maybe", headers=api.h())).status_code == 422

    async def test_soft_delete(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d = await api.deal(p, external_ids={"sap": "X1"})
        url = f"/v1/deals/{d['id']}"
        assert (await api.client.delete(url, headers=api.h())).status_code == 428
        assert (await api.client.delete(url, headers={**api.h(), **m(1)})).status_code == 204
        assert (await api.client.get(url, headers=api.h())).status_code == 404
        assert (await api.client.get("/v1/deals", headers=api.h())).json()["items"] == []
        rows = await api.sql("SELECT deleted_at, version FROM deals")
        assert rows[0]["deleted_at"] is not None
        assert rows[0]["version"] == 2
        assert (await api.sql("SELECT count(*) AS n FROM deal_external_ids"))[0]["n"] == 0


class TestStageHistoryInvariants:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    async def test_random_moves_keep_one_chain_of_stays(self, api: CoreApi, seed: int) -> None:
        """Whatever the sequence of moves, the stays of a deal form one chain: each stay
        but the last is completed and leads to the next, exactly one is open, it is the
        deal's current stage, and no stay ends before it began."""
        rnd = random.Random(seed)
        p = await api.pipeline()
        open_stages = [s["id"] for s in p["stages"] if not s["is_won"] and not s["is_lost"]]
        d = await api.deal(p)
        url = f"/v1/deals/{d['id']}"
        status, version = "open", 1
        for _ in range(12):
            op = rnd.choice(["move", "won", "lost", "reopen", "amount"])
            h = {**api.h(), **m(version)}
            if op == "move":
                target = rnd.choice(open_stages)
                r = await api.client.patch(url, json={"stage_id": target}, headers=h)
            elif op in ("won", "lost"):
                r = await api.client.post(f"{url}/{op}", json={}, headers=h)
            elif op == "reopen":
                r = await api.client.post(f"{url}/reopen", json={}, headers=h)
            else:
                r = await api.client.patch(
                    url, json={"amount": f"{rnd.randint(1, 999)}.00"}, headers=h
                )
            expected_ok = (
                (op in ("won", "lost") and status == "open")
                or (op == "reopen" and status != "open")
                or op == "amount"
                or (op == "move" and status == "open")
            )
            assert (r.status_code == 200) == expected_ok, (op, status, r.text)
            if r.status_code == 200:
                status, version = r.json()["status"], r.json()["version"]
        rows = await api.sql(
            "SELECT stage_id, from_stage_id, to_stage_id, entered_at, left_at "
            "FROM deal_stage_history WHERE deal_id = $1 ORDER BY id",
            d["id"],
        )
        current = (await api.client.get(url, headers=api.h())).json()
        assert [r["left_at"] is None for r in rows].count(True) == 1
        assert rows[-1]["left_at"] is None
        assert str(rows[-1]["stage_id"]) == current["stage_id"]
        assert rows[0]["from_stage_id"] is None
        for prev, nxt in itertools.pairwise(rows):
            assert prev["to_stage_id"] == nxt["stage_id"]
            assert nxt["from_stage_id"] == prev["stage_id"]
            assert prev["left_at"] >= prev["entered_at"]
