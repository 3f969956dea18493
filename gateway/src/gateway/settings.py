"""Gateway settings: the upstream services, the per-tenant rate limit and proxy timeouts."""

from __future__ import annotations

import json
from typing import Any

from pydantic import field_validator

from chassis.settings import ServiceSettings

# Local ports of ARCHITECTURE.md section 2; a deployment overrides them with GATEWAY_UPSTREAMS.
DEFAULT_UPSTREAMS = {
    "contacts": "http://127.0.0.1:8001",
    "pipeline": "http://127.0.0.1:8002",
    "commissions": "http://127.0.0.1:8003",
    "tickets": "http://127.0.0.1:8004",
}


class GatewaySettings(ServiceSettings):
    """`GATEWAY_X` overrides `CRM_X` (chassis.settings.load_settings)."""

    # Service name -> base URL. Env: GATEWAY_UPSTREAMS='{"contacts": "http://contacts:8000"}'.
    upstreams: dict[str, str] = DEFAULT_UPSTREAMS
    # Token bucket per tenant, shared by every /v1 request of the tenant on this instance.
    # A value <= 0 turns the limit off.
    rate_limit_per_second: float = 1000.0
    rate_limit_burst: int = 2000
    # Token bucket per client address on the public routes (/v1/public/...: survey answers,
    # tracking, unsubscribe), which take no JWT. A value <= 0 turns it off.
    public_rate_limit_per_second: float = 5.0
    public_rate_limit_burst: int = 20
    proxy_connect_timeout: float = 2.0
    proxy_read_timeout: float = 30.0
    proxy_write_timeout: float = 30.0
    proxy_pool_timeout: float = 5.0
    proxy_max_connections: int = 256
    proxy_max_keepalive: int = 128
    # Upstream OpenAPI documents are refetched after this long (and on the next request after
    # a failed fetch).
    openapi_cache_seconds: float = 300.0
    # gc.freeze() once started (see gateway.app); tests that start many apps turn it off.
    gc_freeze_at_startup: bool = True

    @field_validator("upstreams", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value)
        return value

    @field_validator("upstreams")
    @classmethod
    def _strip_slash(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: url.rstrip("/") for name, url in value.items()}
