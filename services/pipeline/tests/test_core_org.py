"""Teams (the sales org) and pipelines with their stages."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.testkit import DEFAULT_STAGES, CoreApi, new_id


@pytest.fixture
def api(client: Any, crm_infra: Any, db_url: str, app: Any) -> CoreApi:
    return CoreApi(client, crm_infra, db_url, app)


def m(version: int) -> dict[str, str]:
    return {"If-Match": f'"{version}"'}


class TestTeams:
    async def test_create_read_list(self, api: CoreApi) -> None:
        r = await api.client.post(
            "/v1/teams",
            json={
                "name": "East",
                "parent_id": None,
                "members": [
                    {"user_id": "u-rep1", "role": "rep"},
                    {"user_id": "u-mgr", "role": "manager"},
                ],
            },
            headers=api.h(),
        )
        assert r.status_code == 201, r.text
        team = r.json()
        assert r.headers["ETag"] == '"1"'
        assert r.headers["Location"] == f"/v1/teams/{team['id']}"
        assert team["members"] == [
            {"user_id": "u-mgr", "role": "manager"},
            {"user_id": "u-rep1", "role": "rep"},
        ]
        child = await api.team("East-North", parent_id=team["id"])
        got = await api.client.get(f"/v1/teams/{team['id']}", headers=api.h("sales_rep", "u-x"))
        assert got.status_code == 200
        assert got.json()["name"] == "East"
        listed = await api.client.get("/v1/teams?limit=1", headers=api.h("sales_rep", "u-x"))
        assert [t["id"] for t in listed.json()["items"]] == [team["id"]]
        nxt = await api.client.get(
            f"/v1/teams?limit=1&cursor={listed.json()['next_cursor']}", headers=api.h()
        )
        assert [t["id"] for t in nxt.json()["items"]] == [child["id"]]
        assert nxt.json()["next_cursor"] is None
        by_parent = await api.client.get(f"/v1/teams?parent_id={team['id']}", headers=api.h())
        assert [t["id"] for t in by_parent.json()["items"]] == [child["id"]]

    async def test_writes_are_admin_only(self, api: CoreApi) -> None:
        for role in ("sales_manager", "sales_rep"):
            r = await api.client.post("/v1/teams", json={"name": "X"}, headers=api.h(role))
            assert r.status_code == 403
        assert (await api.sql("SELECT count(*) AS n FROM teams"))[0]["n"] == 0

    async def test_bad_input(self, api: CoreApi) -> None:
        cases = [
            ({"members": []}, ["name"]),
            ({"name": "X", "parent_id": new_id()}, ["parent_id"]),
            ({"name": "X", "members": [{"user_id": "u", "role": "boss"}]}, ["members", 0, "role"]),
            (
                {"name": "X", "members": [{"user_id": "u"}, {"user_id": "u", "role": "manager"}]},
                ["members", 1, "user_id"],
            ),
        ]
        for body, path in cases:
            r = await api.client.post("/v1/teams", json=body, headers=api.h())
            assert r.status_code == 422, body
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["errors"][0]["path"] == path
        assert (await api.sql("SELECT count(*) AS n FROM teams"))[0]["n"] == 0

    async def test_patch_rename_reparent_and_members(self, api: CoreApi) -> None:
        a = await api.team("A")
        b = await api.team("B", members=[{"user_id": "u1", "role": "rep"}])
        url = f"/v1/teams/{b['id']}"
        assert (
            await api.client.patch(url, json={"name": "B2"}, headers=api.h())
        ).status_code == 428
        stale = await api.client.patch(url, json={"name": "B2"}, headers={**api.h(), **m(9)})
        assert stale.status_code == 412
        r = await api.client.patch(
            url,
            json={"name": "B2", "parent_id": a["id"], "members": [{"user_id": "u2"}]},
            headers={**api.h(), **m(1)},
        )
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2
        assert r.json()["parent_id"] == a["id"]
        assert r.json()["members"] == [{"user_id": "u2", "role": "rep"}]
        rows = await api.sql("SELECT user_id FROM team_members WHERE team_id = $1", b["id"])
        assert [x["user_id"] for x in rows] == ["u2"]
        same = await api.client.patch(url, json={"name": "B2"}, headers={**api.h(), **m(2)})
        assert same.json()["version"] == 2  # no change, no new version

    async def test_cycles_rejected(self, api: CoreApi) -> None:
        a = await api.team("A")
        b = await api.team("B", parent_id=a["id"])
        c = await api.team("C", parent_id=b["id"])
        for target, parent in ((a, c["id"]), (a, a["id"])):
            r = await api.client.patch(
                f"/v1/teams/{target['id']}",
                json={"parent_id": parent},
                headers={**api.h(), **m(1)},
            )
            assert r.status_code == 422
            assert r.json()["errors"][0]["path"] == ["parent_id"]
        rows = await api.sql("SELECT parent_id FROM teams WHERE id = $1", a["id"])
        assert rows[0]["parent_id"] is None

    async def test_member_endpoints(self, api: CoreApi) -> None:
        t = await api.team("A", members=[{"user_id": "u1", "role": "rep"}])
        url = f"/v1/teams/{t['id']}/members"
        r = await api.client.put(f"{url}/u1", json={"role": "manager"}, headers=api.h())
        assert r.status_code == 200
        assert r.json()["members"] == [{"user_id": "u1", "role": "manager"}]
        r = await api.client.put(f"{url}/u2", json={"role": "rep"}, headers=api.h())
        assert [x["user_id"] for x in r.json()["members"]] == ["u1", "u2"]
        assert r.json()["version"] == 3
        r = await api.client.delete(f"{url}/u1", headers=api.h())
        assert r.json()["members"] == [{"user_id": "u2", "role": "rep"}]
        assert (await api.client.delete(f"{url}/nobody", headers=api.h())).status_code == 404
        r = await api.client.put(f"{url}/u3", json={"role": "rep"}, headers=api.h("sales_rep"))
        assert r.status_code == 403

    async def test_delete(self, api: CoreApi) -> None:
        a = await api.team("A", members=[{"user_id": "u1", "role": "manager"}])
        b = await api.team("B", parent_id=a["id"])
        r = await api.client.delete(f"/v1/teams/{a['id']}", headers={**api.h(), **m(1)})
        assert r.status_code == 409
        r = await api.client.delete(f"/v1/teams/{b['id']}", headers={**api.h(), **m(1)})
        assert r.status_code == 204
        r = await api.client.delete(f"/v1/teams/{a['id']}", headers={**api.h(), **m(1)})
        assert r.status_code == 204
        assert (await api.client.get(f"/v1/teams/{a['id']}", headers=api.h())).status_code == 404
        assert (await api.sql("SELECT count(*) AS n FROM team_members"))[0]["n"] == 0

    async def test_other_tenant_is_404(self, api: CoreApi) -> None:
        t = await api.team("A")
        r = await api.client.get(f"/v1/teams/{t['id']}", headers=api.h(tenant="globex"))
        assert r.status_code == 404
        r = await api.client.get("/v1/teams", headers=api.h(tenant="globex"))
        assert r.json()["items"] == []


class TestPipelines:
    async def test_create_returns_ordered_stages(self, api: CoreApi) -> None:
        r = await api.client.post(
            "/v1/pipelines",
            json={"name": "New business", "stages": DEFAULT_STAGES},
            headers=api.h(),
        )
        assert r.status_code == 201, r.text
        p = r.json()
        assert [s["name"] for s in p["stages"]] == [s["name"] for s in DEFAULT_STAGES]
        assert [s["position"] for s in p["stages"]] == [0, 1, 2, 3, 4]
        assert all(s["id"] for s in p["stages"])
        assert p["stages"][3]["is_won"]
        assert p["stages"][4]["is_lost"]
        got = await api.client.get(f"/v1/pipelines/{p['id']}", headers=api.h("sales_rep"))
        assert got.json() == p
        listed = await api.client.get("/v1/pipelines", headers=api.h("sales_rep"))
        assert [x["id"] for x in listed.json()["items"]] == [p["id"]]

    @pytest.mark.parametrize(
        ("stages", "path"),
        [
            ([s for s in DEFAULT_STAGES if not s.get("is_won")], ["stages"]),
            ([*DEFAULT_STAGES, {**DEFAULT_STAGES[4], "name": "Lost 2"}], ["stages"]),
            (
                [
                    {**DEFAULT_STAGES[0]},
                    {**DEFAULT_STAGES[3], "is_lost": True},
                    {**DEFAULT_STAGES[4]},
                ],
                ["stages", 1],
            ),
            ([DEFAULT_STAGES[3], DEFAULT_STAGES[4]], ["stages"]),
            (
                [{**DEFAULT_STAGES[0], "probability": 101}, *DEFAULT_STAGES[1:]],
                ["stages", 0, "probability"],
            ),
            (
                [{**DEFAULT_STAGES[0], "forecast_category": "maybe"}, *DEFAULT_STAGES[1:]],
                ["stages", 0, "forecast_category"],
            ),
            ([DEFAULT_STAGES[0], *DEFAULT_STAGES], ["stages", 1, "name"]),
        ],
    )
    async def test_bad_stages(self, api: CoreApi, stages: list[Any], path: list[Any]) -> None:
        r = await api.client.post(
            "/v1/pipelines", json={"name": "P", "stages": stages}, headers=api.h()
        )
        assert r.status_code == 422, r.text
        assert path in [e["path"] for e in r.json()["errors"]]
        assert (await api.sql("SELECT count(*) AS n FROM pipelines"))[0]["n"] == 0

    async def test_writes_are_admin_only(self, api: CoreApi) -> None:
        r = await api.client.post(
            "/v1/pipelines",
            json={"name": "P", "stages": DEFAULT_STAGES},
            headers=api.h("sales_manager"),
        )
        assert r.status_code == 403

    async def test_patch_keeps_adds_removes_stages(self, api: CoreApi) -> None:
        p = await api.pipeline()
        s = p["stages"]
        stages = [
            {**DEFAULT_STAGES[0], "id": s[0]["id"], "name": "Discovery"},
            {"name": "Demo", "probability": 30, "forecast_category": "pipeline"},
            {**DEFAULT_STAGES[2], "id": s[2]["id"]},
            {**DEFAULT_STAGES[3], "id": s[3]["id"]},
            {**DEFAULT_STAGES[4], "id": s[4]["id"]},
        ]
        r = await api.client.patch(
            f"/v1/pipelines/{p['id']}",
            json={"name": "NB", "stages": stages},
            headers={**api.h(), **m(1)},
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["version"] == 2
        assert [x["name"] for x in out["stages"]] == [
            "Discovery",
            "Demo",
            "Negotiation",
            "Won",
            "Lost",
        ]
        assert out["stages"][0]["id"] == s[0]["id"]
        assert out["stages"][1]["id"] not in {x["id"] for x in s}
        removed = await api.sql("SELECT deleted_at FROM stages WHERE id = $1", s[1]["id"])
        assert removed[0]["deleted_at"] is not None

    async def test_patch_removing_busy_stage_is_409(self, api: CoreApi) -> None:
        p = await api.pipeline()
        s = p["stages"]
        await api.deal(p, stage_id=s[1]["id"])
        stages = [{**DEFAULT_STAGES[i], "id": s[i]["id"]} for i in (0, 2, 3, 4)]
        r = await api.client.patch(
            f"/v1/pipelines/{p['id']}", json={"stages": stages}, headers={**api.h(), **m(1)}
        )
        assert r.status_code == 409
        assert r.json()["stage_ids"] == [s[1]["id"]]
        foreign = [{**DEFAULT_STAGES[0], "id": new_id()}, *DEFAULT_STAGES[1:]]
        r = await api.client.patch(
            f"/v1/pipelines/{p['id']}", json={"stages": foreign}, headers={**api.h(), **m(1)}
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["stages", 0, "id"]
        assert (await api.client.get(f"/v1/pipelines/{p['id']}", headers=api.h())).json() == p

    async def test_delete(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d = await api.deal(p)
        r = await api.client.delete(f"/v1/pipelines/{p['id']}", headers={**api.h(), **m(1)})
        assert r.status_code == 409
        await api.client.delete(f"/v1/deals/{d['id']}", headers={**api.h(), **m(1)})
        r = await api.client.delete(f"/v1/pipelines/{p['id']}", headers={**api.h(), **m(1)})
        assert r.status_code == 204
        assert (
            await api.client.get(f"/v1/pipelines/{p['id']}", headers=api.h())
        ).status_code == 404
        r = await api.client.post(
            "/v1/deals",
            json={"name": "x", "pipeline_id": p["id"], "currency": "USD"},
            headers=api.h(),
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["pipeline_id"]
