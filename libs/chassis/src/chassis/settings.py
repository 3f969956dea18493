"""Service settings: pydantic-settings with a per-service env prefix over shared CRM_ defaults.

`SERVICE_FIELD` (e.g. `CONTACTS_DATABASE_URL`) wins over `CRM_FIELD`; a shared
`CRM_DATABASE_URL` names the server, and each service gets its own database on it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_DATA_DIR = Path(os.environ.get("CRM_DATA_DIR", ".data"))


class ServiceSettings(BaseSettings):
    """Settings every service shares; services subclass it to add their own."""

    model_config = SettingsConfigDict(env_prefix="CRM_", extra="ignore")

    service_name: str = "service"
    env: Literal["dev", "test", "prod"] = "dev"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # Connections each service keeps open (a quarter more for bursts, closed after use).
    # Sized for the in-flight requests of a busy service: a pool smaller than that opens and
    # closes a connection (a PostgreSQL backend) for one request in ten at 250 writes/s.
    db_pool_size: int = 20
    # The raw pool of the hot read paths (e.g. the 360 view): a query holds its connection
    # only while PostgreSQL works, so a few saturate the server; more only add contention
    # (the 360 read bench: ~2,750 req/s with 10, ~2,400 with 20).
    db_read_pool_size: int = 10
    nats_url: str = "nats://127.0.0.1:4222"
    stream_replicas: int = 1
    # JetStream keeps events this long (partners replay from it; webhooks replay from the
    # gateway's copy with the same default); bounded so the file store cannot fill up.
    stream_max_age_days: float = 30.0
    jwt_issuer: str = "crm-dev"
    jwt_audience: str = "crm"
    jwks_url: str | None = None
    jwks_file: Path = DEV_DATA_DIR / "jwt" / "jwks.json"
    max_body_bytes: int = 1_048_576
    relay_batch_size: int = 500
    relay_poll_seconds: float = 1.0
    consumer_batch_size: int = 200
    consumer_max_deliver: int = 8
    # chassis.housekeeping: sent outbox rows kept this long; the pass runs this often
    outbox_keep_hours: float = 72.0
    housekeeping_seconds: float = 3600.0
    log_level: str = "INFO"
    log_json: bool = True
    # A span per SQL statement (OpenTelemetry's SQLAlchemy instrumentation). Off by default:
    # it cost ~4% of a service's CPU on the write path, and each request's span already
    # carries its database time; turn it on to see the statements of a slow request.
    trace_sql: bool = False

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_dev(self) -> ServiceSettings:
        if self.env == "prod":
            if self.jwks_url is None and self.jwks_file == DEV_DATA_DIR / "jwt" / "jwks.json":
                raise ValueError(
                    "CRM_ENV=prod needs CRM_JWKS_URL (or an explicit CRM_JWKS_FILE): "
                    "the generated development key is refused outside dev"
                )
            if self.jwt_issuer == "crm-dev":
                raise ValueError("CRM_ENV=prod needs CRM_JWT_ISSUER; 'crm-dev' is the dev issuer")
        return self


S = TypeVar("S", bound=ServiceSettings)


def with_database(url: str, database: str) -> str:
    """Return `url` pointing at `database` on the same server (query, e.g. a socket host, kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def load_settings(cls: type[S], service: str) -> S:
    """Build settings for `service`: `<SERVICE>_X` overrides `CRM_X` overrides defaults."""
    prefix = service.upper().replace("-", "_") + "_"
    overrides: dict[str, object] = {"service_name": service}
    for name in cls.model_fields:
        value = os.environ.get(prefix + name.upper())
        if value is not None:
            overrides[name] = value
    if "database_url" not in overrides:
        base = os.environ.get("CRM_DATABASE_URL", cls.model_fields["database_url"].default)
        overrides["database_url"] = with_database(base, f"crm_{service.replace('-', '_')}")
    return cls(**overrides)  # type: ignore[arg-type]
