"""Settings of the campaigns service (env prefix CAMPAIGNS_, falling back to CRM_)."""

from __future__ import annotations

from pydantic import model_validator

from chassis.settings import ServiceSettings

DEV_SIGNING_SECRET = "dev-campaigns-signing-secret-change-me"


class CampaignsSettings(ServiceSettings):
    # SMTP server the emails go to (`make run` starts the local sink on 2525).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = 10.0
    # Parallel SMTP connections of the sender; each sends its share of a batch in turn.
    smtp_connections: int = 4
    mail_from: str = "CRM <marketing@crm.local>"
    # Throttle: at most this many emails per second per replica (0 = unlimited).
    send_rate_per_second: float = 50.0
    # Transient SMTP failures are retried with exponential backoff up to this many attempts.
    send_max_attempts: int = 5
    send_retry_base_seconds: float = 30.0
    send_batch_size: int = 200
    # Base URL of the public tracking and unsubscribe links (the gateway).
    public_base_url: str = "http://127.0.0.1:8000"
    # Secret that signs tracking and unsubscribe tokens (itsdangerous).
    signing_secret: str = DEV_SIGNING_SECRET
    # How often the schedulers look for due work when nothing woke them.
    scheduler_poll_seconds: float = 5.0
    # Every dynamic segment is re-evaluated this often (time-based conditions drift without
    # any write); changes of contacts and segments are applied at once.
    segment_refresh_seconds: float = 300.0
    # Largest page of segment members.
    max_page_size: int = 500

    @model_validator(mode="after")
    def _refuse_dev_signing_secret(self) -> CampaignsSettings:
        if self.env == "prod" and self.signing_secret == DEV_SIGNING_SECRET:
            raise ValueError(
                "CRM_ENV=prod needs CAMPAIGNS_SIGNING_SECRET: the development secret is refused"
            )
        return self
