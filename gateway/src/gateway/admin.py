"""`/v1/admin/{service}/dead-letters…`: the dead-letter admin API of every service, behind the
gateway (see `chassis.deadletters`).

Services serve it at `/admin/dead-letters…`, outside `/v1` so that it can never collide with
the resource prefixes of the route table. Here a path rewrite maps
`/v1/admin/<service>/dead-letters<rest>` to `<service>`'s `/admin/dead-letters<rest>` and
hands the request to the ordinary proxy endpoint (JWT, rate limit, streaming, trace
context); only the paths the API has (`""`, `/{id}`, `/{id}/replay`) are forwarded, anything
else is a 404 here. The gateway's own dead letters (`/v1/admin/gateway/dead-letters…`) are
served locally by the same chassis router, behind the gateway's access check; the chassis'
unprefixed `/admin/dead-letters` routes are taken off the gateway, whose public surface is
`/v1`.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from chassis import deadletters
from gateway import proxy
from gateway.access import admitted

LOCAL = "gateway"
PATTERN = "/v1/admin/{service}/dead-letters{rest:path}"
_REST = re.compile(r"(/[0-9]{1,18}(/replay)?)?")
_SERVICE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class DeadLetterProxy:
    """The raw ASGI endpoint of `PATTERN`: validate, rewrite the path, proxy."""

    def __init__(self) -> None:
        self._endpoints: dict[str, proxy.Upstream] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params", {})
        service, rest = str(params.get("service", "")), str(params.get("rest", ""))
        upstreams = scope["app"].state.upstreams
        if not _REST.fullmatch(rest) or not _SERVICE.fullmatch(service):
            await proxy.send_problem(
                send, 404, "Not found", "no such dead-letter path", instance=scope["path"]
            )
            return
        if service == LOCAL:  # the local router took every method it has
            allow = "POST" if rest.endswith("/replay") else "DELETE, GET" if rest else "GET"
            await proxy.send_problem(
                send,
                405,
                "Method not allowed",
                "method not allowed",
                headers={"Allow": allow},
                instance=scope["path"],
            )
            return
        if service not in upstreams:
            await proxy.send_problem(
                send, 404, "Not found", f"no service {service!r}", instance=scope["path"]
            )
            return
        endpoint = self._endpoints.get(service)
        if endpoint is None:
            endpoint = self._endpoints[service] = proxy.Upstream(service)
        path = deadletters.PREFIX + rest
        await endpoint({**scope, "path": path, "raw_path": path.encode()}, receive, send)


def _is_unprefixed(route: BaseRoute) -> bool:
    """A route (or, on FastAPI >= 0.165, an included router) of the chassis' own mount."""
    router = getattr(route, "original_router", None)
    path = getattr(route, "path", None) or getattr(router, "prefix", "")
    return str(path).startswith(deadletters.PREFIX)


def install(app: FastAPI) -> None:
    """Register the route family on a built gateway app (after the proxy routes: its paths
    are under `/v1/admin`, which no route table prefix owns)."""
    app.router.routes[:] = [r for r in app.router.routes if not _is_unprefixed(r)]
    app.include_router(
        deadletters.router(LOCAL, prefix=f"/v1/admin/{LOCAL}/dead-letters", authenticate=admitted)
    )
    app.router.routes.append(
        Route(
            PATTERN, DeadLetterProxy(), methods=["GET", "POST", "DELETE"], include_in_schema=False
        )
    )
