"""One OpenAPI document for the whole platform: the gateway's own paths plus the paths every
upstream serves through the gateway, with their components merged (a clashing component name
is prefixed with the service name and its `$ref`s rewritten), a bearer JWT security scheme,
Swagger UI on it at `/docs`, and the public JWKS at `/.well-known/jwks.json`."""

from __future__ import annotations

import copy
import json
import logging
import time
from importlib import resources
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from chassis.problems import BadGateway
from gateway.routes import Route, owns
from gateway.settings import GatewaySettings

log = logging.getLogger("gateway.openapi")

Doc = dict[str, Any]
SECURITY_SCHEME = "bearerAuth"
# Overrides the document-wide bearer requirement (`merge`): these are served without a token.
PUBLIC: dict[str, Any] = {"security": []}
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value in renames:
                out[key] = renames[value]
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node


def _prefixed(service: str, name: str) -> str:
    return f"{service}_{name}"


def merge(own: Doc, upstreams: dict[str, Doc], routes: list[Route]) -> Doc:
    """Merge upstream documents into the gateway's own (a copy). Pure: no I/O."""
    merged = copy.deepcopy(own)
    paths: dict[str, Any] = merged.setdefault("paths", {})
    components: dict[str, dict[str, Any]] = merged.setdefault("components", {})
    tags: list[dict[str, Any]] = merged.setdefault("tags", [])
    groups = [{"name": "gateway", "tags": _operation_tags(merged.get("paths", {}))}]
    for service in sorted(upstreams):
        doc = upstreams[service]
        theirs: dict[str, dict[str, Any]] = doc.get("components", {})
        # Rename clashing components until stable: a rename can make a component that refers
        # to it differ from the gateway's same-named one.
        renames: dict[str, str] = {}
        while True:
            rewritten = _rewrite_refs(theirs, renames)
            added = False
            for section, items in rewritten.items():
                mine = components.get(section, {})
                for name, value in items.items():
                    ref = f"#/components/{section}/{name}"
                    if ref not in renames and name in mine and mine[name] != value:
                        renames[ref] = f"#/components/{section}/{_prefixed(service, name)}"
                        added = True
            if not added:
                break
        for section, items in rewritten.items():
            target = components.setdefault(section, {})
            for name, value in items.items():
                ref = f"#/components/{section}/{name}"
                target[_prefixed(service, name) if ref in renames else name] = value
        mine_routes = [r for r in routes if r.upstream == service]
        served: dict[str, Any] = {}
        for path, item in _rewrite_refs(doc.get("paths", {}), renames).items():
            owners = [r for r in mine_routes if owns(r, path)]
            if not owners:
                continue  # not served through the gateway
            public = any(r.public for r in owners)
            slot = paths.setdefault(path, {})
            for method, operation in item.items():
                if public and isinstance(operation, dict):
                    # served without a token: override the document-wide bearer requirement
                    operation = {**operation, "security": []}
                slot.setdefault(method, operation)
            served[path] = item
        groups.append({"name": service, "tags": _operation_tags(served)})
        known = {t.get("name") for t in tags}
        tags += [t for t in doc.get("tags", []) if t.get("name") not in known]
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from the identity provider (RS256/ES256).",
    }
    merged["security"] = [{SECURITY_SCHEME: []}]
    # Redoc-style grouping: one group per service, listing the tags of its operations, so a
    # frontend developer sees which service owns which resource.
    merged["x-tagGroups"] = [g for g in groups if g["tags"]]
    known = {t.get("name") for t in tags}
    tags += [{"name": name} for g in groups for name in g["tags"] if name not in known]
    if not tags:
        del merged["tags"]
    return merged


def _operation_tags(paths: dict[str, Any]) -> list[str]:
    """The tags of these operations, in first-seen order."""
    seen: dict[str, None] = {}
    for item in paths.values():
        for operation in item.values():
            if isinstance(operation, dict):
                for tag in operation.get("tags", []):
                    seen.setdefault(tag, None)
    return list(seen)


class OpenApiCache:
    """Upstream documents fetched lazily, kept `ttl` seconds, refetched on the next request
    after a failure (the last good copy is served meanwhile)."""

    def __init__(self, routes: list[Route], ttl: float) -> None:
        self.routes = routes
        self.ttl = ttl
        self._docs: dict[str, tuple[Doc, float]] = {}
        self._merged: Doc | None = None
        self._merged_key: tuple[Any, ...] = ()

    async def _refresh(self, clients: dict[str, httpx.AsyncClient]) -> None:
        now = time.monotonic()
        for name in sorted({r.upstream for r in self.routes}):
            cached = self._docs.get(name)
            if cached is not None and now - cached[1] < self.ttl:
                continue
            try:
                r = await clients[name].get("/openapi.json")
                r.raise_for_status()
                self._docs[name] = (r.json(), now)
            except (httpx.HTTPError, ValueError) as e:
                log.warning("OpenAPI of %s not available: %r", name, e)

    async def document(self, app: FastAPI) -> Doc:
        await self._refresh(app.state.upstreams)
        key = tuple((name, fetched) for name, (_, fetched) in sorted(self._docs.items()))
        if self._merged is None or key != self._merged_key:
            upstream_docs = {name: doc for name, (doc, _) in self._docs.items()}
            self._merged = merge(app.openapi(), upstream_docs, self.routes)
            self._merged_key = key
        return self._merged


class JwksSource:
    """The public keys tokens are verified with: the dev JWKS file, or the identity
    provider's (cached)."""

    def __init__(self, settings: GatewaySettings, ttl: float = 300.0) -> None:
        self.settings = settings
        self.ttl = ttl
        self._doc: Doc | None = None
        self._at = 0.0

    async def document(self) -> Doc:
        if self._doc is not None and time.monotonic() - self._at < self.ttl:
            return self._doc
        try:
            if self.settings.jwks_url:
                async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
                    r = await client.get(self.settings.jwks_url)
                    r.raise_for_status()
                    doc = r.json()
            else:
                doc = json.loads(self.settings.jwks_file.read_text())
        except (httpx.HTTPError, OSError, ValueError) as e:
            if self._doc is not None:
                return self._doc
            raise BadGateway("the signing keys are not available") from e
        keys = [
            {k: v for k, v in key.items() if k not in _PRIVATE_JWK_MEMBERS}
            for key in doc.get("keys", [])
        ]
        self._doc, self._at = {"keys": keys}, time.monotonic()
        return self._doc


router = APIRouter(tags=["gateway"])


@router.get("/openapi.json", include_in_schema=False)
async def openapi_document(request: Request) -> JSONResponse:
    cache: OpenApiCache = request.app.state.openapi_cache
    return JSONResponse(await cache.document(request.app))


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="CRM platform API",
        swagger_ui_parameters={"persistAuthorization": True},
    )


_ASYNCAPI = resources.files("crm").joinpath("asyncapi.json")


@router.get(
    "/asyncapi.json", summary="AsyncAPI 3 document of every domain event", openapi_extra=PUBLIC
)
async def asyncapi_document() -> Response:
    """Every NATS subject partners can subscribe to, with its CloudEvents headers and the
    protobuf message of its body (generated from `proto/`)."""
    return Response(
        _ASYNCAPI.read_bytes(),
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


@router.get("/.well-known/jwks.json", summary="Public signing keys (JWKS)", openapi_extra=PUBLIC)
async def jwks(request: Request) -> JSONResponse:
    """The public keys that access tokens are verified with."""
    source: JwksSource = request.app.state.jwks
    return JSONResponse(await source.document(), headers={"Cache-Control": "public, max-age=300"})
