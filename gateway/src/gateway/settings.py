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
    "campaigns": "http://127.0.0.1:8005",
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
    # Token bucket per caller (tenant + subject + client) inside the tenant's; <= 0: off.
    token_rate_limit_per_second: float = 500.0
    token_rate_limit_burst: int = 1000
    public_rate_limit_burst: int = 20
    # Browser origins allowed to call the API (CORS), e.g. ["https://app.example.com"];
    # empty: no CORS headers at all. Env: GATEWAY_CORS_ORIGINS='["https://app.example.com"]'.
    cors_origins: list[str] = []
    cors_allow_credentials: bool = False
    # Gzip responses of at least this many bytes when the client accepts it; 0 turns it off.
    gzip_min_bytes: int = 1024
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

    # --- customer analytics (gateway.readmodel.analytics) -----------------------------------
    # Every tenant's RFM breakpoints are recomputed, and every customer rescored, this often.
    analytics_full_pass_seconds: float = 3600.0
    # Customers rescored per transaction of the full pass.
    analytics_batch_size: int = 500

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

    # --- event log, change feed and partner webhooks (gateway.feed, gateway.webhooks) -------
    # How long the gateway keeps its copy of every event (the change feed and webhook replay
    # read it); older rows are pruned every `event_log_prune_seconds`.
    event_log_retention_days: float = 30.0
    event_log_prune_seconds: float = 3600.0
    # Largest page of GET /v1/changes.
    changes_max_limit: int = 1000
    # Webhook targets on private, loopback, link-local, multicast or reserved addresses are
    # refused unless this is true. None: allowed in dev and test, refused in prod (CRM_ENV).
    webhooks_allow_private_targets: bool | None = None
    # Seconds to wait before retry n (n = 1, 2, ...): at least 3 days in all by default; the
    # delivery fails and the subscription is disabled when the schedule is exhausted. Each
    # wait gets +-`webhooks_retry_jitter` (a fraction) of random jitter.
    # Env: GATEWAY_WEBHOOKS_RETRY_SCHEDULE='[5, 30, 120]'.
    webhooks_retry_schedule: list[float] = [
        5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800,
        43200, 43200, 43200, 43200, 43200, 43200,
    ]  # fmt: skip
    webhooks_retry_jitter: float = 0.2
    # Both secrets sign during this overlap after a rotation (unless the request says).
    webhooks_rotation_overlap_seconds: float = 86400.0
    webhooks_connect_timeout: float = 5.0
    webhooks_timeout: float = 10.0
    # A claimed (subscription, aggregate) queue is not claimed again for this long.
    webhooks_lease_seconds: float = 60.0
    webhooks_poll_seconds: float = 1.0
    webhooks_batch_size: int = 100
    # Deliveries sent in a row to one (subscription, aggregate) per claim.
    webhooks_burst: int = 20
    webhooks_concurrency: int = 32
    webhooks_replay_max: int = 100_000

    @field_validator("webhooks_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value)
        return value

    @property
    def webhooks_private_targets_allowed(self) -> bool:
        if self.webhooks_allow_private_targets is not None:
            return self.webhooks_allow_private_targets
        return self.env != "prod"
