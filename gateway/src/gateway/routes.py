"""The route table: which upstream service owns which `/v1/<resource>` prefix.

Adding a service is one line per resource prefix here plus its base URL in
`GatewaySettings.upstreams`. A prefix matches itself and everything below it
(`/v1/contacts`, `/v1/contacts/{id}`, `/v1/contacts/by-external-id/...`), never a longer
name (`/v1/contactsx`). Routes of an upstream that is not configured are left out, so a
deployment may run without a service.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    prefix: str
    upstream: str


ROUTES: tuple[Route, ...] = (
    Route("/v1/contacts", "contacts"),
    Route("/v1/companies", "contacts"),
    Route("/v1/custom-fields", "contacts"),
    # pipeline
    Route("/v1/teams", "pipeline"),
    Route("/v1/pipelines", "pipeline"),
    Route("/v1/deals", "pipeline"),
    Route("/v1/orders", "pipeline"),
    Route("/v1/activities", "pipeline"),
    Route("/v1/tasks", "pipeline"),
    Route("/v1/forecast", "pipeline"),
    Route("/v1/reports/funnel", "pipeline"),
    Route("/v1/reports/sales-cycle", "pipeline"),
    Route("/v1/reports/win-rate", "pipeline"),
    Route("/v1/reports/activities", "pipeline"),
    Route("/v1/reports/average-deal-size", "pipeline"),
    Route("/v1/playbooks", "pipeline"),
)


def routes_for(upstreams: dict[str, str], table: tuple[Route, ...] = ROUTES) -> list[Route]:
    """The routes whose upstream is configured."""
    return [r for r in table if r.upstream in upstreams]


def owns(route: Route, path: str) -> bool:
    return path == route.prefix or path.startswith(route.prefix + "/")
