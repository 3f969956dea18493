"""Custom field definitions through the HTTP API."""

from __future__ import annotations

from typing import Any

import pytest


class TestDefineField:
    async def test_define_list_get(self, api: Any) -> None:
        f = await api.field("size", "enum", options=["s", "m"], required=False)
        assert f["version"] == 1
        assert f["object_type"] == "contact"
        r = await api.client.get("/v1/custom-fields/contact", headers=api.h("sales_rep"))
        assert [i["key"] for i in r.json()["items"]] == ["size"]
        r = await api.client.get("/v1/custom-fields/contact/size", headers=api.h())
        assert r.status_code == 200
        assert r.headers["etag"] == '"1"'
        assert (await api.client.get("/v1/custom-fields/company", headers=api.h())).json()[
            "items"
        ] == []

    @pytest.mark.parametrize(
        "role", ["sales_manager", "sales_rep", "marketer", "erp_sync", "partner"]
    )
    async def test_non_admin_gets_403(self, api: Any, role: str) -> None:
        r = await api.client.post(
            "/v1/custom-fields/contact",
            json={"key": "x", "label": "X", "type": "text"},
            headers=api.h(role),
        )
        assert r.status_code == 403

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            ({"key": "Bad Key", "label": "X", "type": "text"}, "key"),
            ({"key": "x", "label": "X", "type": "blob"}, "type"),
            ({"key": "x", "label": "X", "type": "enum"}, "options"),
            ({"key": "x", "label": "X", "type": "text", "options": ["a"]}, "options"),
            ({"key": "x", "label": "X", "type": "enum", "options": ["a", "a"]}, "options"),
        ],
    )
    async def test_bad_definition(self, api: Any, body: dict[str, Any], path: str) -> None:
        r = await api.client.post("/v1/custom-fields/contact", json=body, headers=api.h())
        assert r.status_code == 422
        assert path in [".".join(map(str, e["path"])) for e in r.json()["errors"]]

    async def test_unknown_object_type_and_duplicate_key(self, api: Any) -> None:
        r = await api.client.post(
            "/v1/custom-fields/widget",
            json={"key": "x", "label": "X", "type": "text"},
            headers=api.h(),
        )
        assert r.status_code == 422
        await api.field("x", "text")
        r = await api.client.post(
            "/v1/custom-fields/contact",
            json={"key": "x", "label": "X", "type": "text"},
            headers=api.h(),
        )
        assert r.status_code == 409
        await api.field("x", "text", object_type="deal")


class TestUpdateField:
    async def test_patch_bumps_version_and_applies(self, api: Any) -> None:
        await api.field("size", "enum", options=["s"])
        url = "/v1/custom-fields/contact/size"
        assert (
            await api.client.patch(url, json={"options": ["s", "m"]}, headers=api.h())
        ).status_code == 428
        r = await api.client.patch(
            url,
            json={"options": ["s", "m"], "label": "Size!"},
            headers={**api.h(), "If-Match": '"1"'},
        )
        assert r.status_code == 200
        assert r.json()["version"] == 2
        assert (
            await api.client.patch(url, json={"label": "x"}, headers={**api.h(), "If-Match": '"1"'})
        ).status_code == 412
        c = await api.contact(custom_fields={"size": "m"})
        assert c["custom_fields"] == {"size": "m"}
        forbidden = await api.client.patch(
            url, json={"label": "y"}, headers={**api.h("marketer"), "If-Match": '"2"'}
        )
        assert forbidden.status_code == 403
        no_type_change = await api.client.patch(
            url, json={"type": "text"}, headers={**api.h(), "If-Match": '"2"'}
        )
        assert no_type_change.status_code == 422

    async def test_delete(self, api: Any) -> None:
        await api.field("size", "number")
        url = "/v1/custom-fields/contact/size"
        assert (await api.client.delete(url, headers=api.h())).status_code == 428
        assert (
            await api.client.delete(url, headers={**api.h(), "If-Match": '"1"'})
        ).status_code == 204
        assert (await api.client.get(url, headers=api.h())).status_code == 404
        r = await api.client.post(
            "/v1/contacts", json={"custom_fields": {"size": 1}}, headers=api.h()
        )
        assert r.status_code == 422
