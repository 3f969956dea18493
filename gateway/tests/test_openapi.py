"""The merged OpenAPI document, Swagger UI and the JWKS."""

from __future__ import annotations

import json
from typing import Any

from httpx import AsyncClient

from chassis.testing import Infra
from gateway.openapi import merge
from gateway.routes import Route


class TestMergedDocument:
    async def test_gateway_and_upstream_paths_merged(self, client: AsyncClient) -> None:
        r = await client.get("/openapi.json")
        assert r.status_code == 200
        doc = r.json()
        paths = doc["paths"]
        assert "/v1/customers/{contact_id}/360" in paths
        assert "/v1/customers/{contact_id}/timeline" in paths
        assert "post" in paths["/v1/contacts"]
        assert "patch" in paths["/v1/contacts/{cid}"]
        assert "/v1/companies/entries" in paths
        assert "/internal/debug" not in paths  # not served through the gateway
        assert "/openapi.json" not in paths

        schemas = doc["components"]["schemas"]
        assert "items" in schemas["TimelinePage"]["properties"]
        assert schemas["contacts_TimelineEntry"]["properties"] == {
            "something_else": {"title": "Something Else", "type": "integer"}
        }
        ok = paths["/v1/companies/entries"]["get"]["responses"]["200"]
        ref = ok["content"]["application/json"]["schema"]["items"]["$ref"]
        assert ref == "#/components/schemas/contacts_TimelineEntry"
        assert "ContactIn" in schemas  # no clash: name kept
        assert "contacts_HTTPValidationError" not in schemas  # identical: shared

        assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        assert doc["security"] == [{"bearerAuth": []}]

    async def test_swagger_ui(self, client: AsyncClient) -> None:
        r = await client.get("/docs")
        assert r.status_code == 200
        assert "swagger-ui" in r.text
        assert "/openapi.json" in r.text


class TestJwks:
    async def test_public_keys_served(self, client: AsyncClient, crm_infra: Infra) -> None:
        r = await client.get("/.well-known/jwks.json")
        assert r.status_code == 200
        keys = r.json()["keys"]
        expected = json.loads((crm_infra.jwt_dir / "jwks.json").read_text())["keys"]
        assert [k["kid"] for k in keys] == [k["kid"] for k in expected]
        assert all("d" not in k for k in keys)
        assert keys[0]["kty"] == "RSA"
        assert keys[0]["n"]


def _doc(schemas: dict[str, Any], paths: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"openapi": "3.1.0", "paths": paths or {}, "components": {"schemas": schemas}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class TestMerge:
    def test_clash_renames_and_rewrites_refs_transitively(self) -> None:
        own = _doc({"Money": {"type": "string"}, "Line": {"properties": {"m": _ref("Money")}}})
        theirs = _doc(
            {
                "Money": {"type": "object"},
                "Line": {"properties": {"m": _ref("Money")}},
                "Deal": {"properties": {"l": _ref("Line")}},
            },
            {
                "/v1/deals": {
                    "get": {
                        "responses": {
                            "200": {"content": {"application/json": {"schema": _ref("Deal")}}}
                        }
                    }
                },
                "/v1/other": {"get": {}},
            },
        )
        merged = merge(own, {"pipeline": theirs}, [Route("/v1/deals", "pipeline")])
        schemas = merged["components"]["schemas"]
        assert schemas["Money"] == {"type": "string"}
        assert schemas["pipeline_Money"] == {"type": "object"}
        # Line is textually equal but refers to another Money: renamed as well
        assert schemas["pipeline_Line"] == {"properties": {"m": _ref("pipeline_Money")}}
        assert schemas["Deal"] == {"properties": {"l": _ref("pipeline_Line")}}
        assert "/v1/other" not in merged["paths"]
        assert own["components"]["schemas"].keys() == {"Money", "Line"}  # input untouched

    def test_public_routes_need_no_token(self) -> None:
        theirs = _doc(
            {},
            {
                "/v1/public/csat/{token}": {"post": {"tags": ["surveys"]}},
                "/v1/tickets": {"get": {"tags": ["tickets"]}},
            },
        )
        routes = [
            Route("/v1/public/csat", "tickets", public=True),
            Route("/v1/tickets", "tickets"),
        ]
        merged = merge(_doc({}), {"tickets": theirs}, routes)
        assert merged["security"] == [{"bearerAuth": []}]
        assert merged["paths"]["/v1/public/csat/{token}"]["post"]["security"] == []
        assert "security" not in merged["paths"]["/v1/tickets"]["get"]
        assert "security" not in theirs["paths"]["/v1/public/csat/{token}"]["post"]  # a copy

    def test_tags_grouped_by_the_service_that_serves_them(self) -> None:
        own = _doc({}, {"/v1/customers": {"get": {"tags": ["customers"]}}})
        deals = _doc(
            {},
            {
                "/v1/deals": {"get": {"tags": ["deals"]}, "post": {"tags": ["deals"]}},
                "/v1/teams": {"get": {"tags": ["sales org"]}},
                "/v1/internal": {"get": {"tags": ["internal"]}},  # not routed: no group
            },
        )
        tickets = _doc({}, {"/v1/tickets": {"get": {"tags": ["tickets"]}}})
        routes = [
            Route("/v1/deals", "pipeline"),
            Route("/v1/teams", "pipeline"),
            Route("/v1/tickets", "tickets"),
        ]
        merged = merge(own, {"pipeline": deals, "tickets": tickets}, routes)
        assert "security" not in merged["paths"]["/v1/tickets"]["get"]
        assert merged["x-tagGroups"] == [
            {"name": "gateway", "tags": ["customers"]},
            {"name": "pipeline", "tags": ["deals", "sales org"]},
            {"name": "tickets", "tags": ["tickets"]},
        ]
        assert [t["name"] for t in merged["tags"]] == [
            "customers",
            "deals",
            "sales org",
            "tickets",
        ]


class TestAsyncApi:
    async def test_every_registered_event_is_documented(self, client: AsyncClient) -> None:
        from crm.registry import EVENT_TYPES

        r = await client.get("/asyncapi.json")
        assert r.status_code == 200
        doc = r.json()
        assert doc["asyncapi"] == "3.0.0"
        documented = {m["x-ce-type"] for m in doc["components"]["messages"].values()}
        assert documented == set(EVENT_TYPES)
        won = doc["channels"]["pipelineDealWon"]
        assert won["address"] == "crm.pipeline.{tenant}.deal.won"
        assert won["summary"].startswith("A deal was won")
