"""Settings of the tickets service (env prefix TICKETS_, falling back to CRM_)."""

from __future__ import annotations

from pydantic import model_validator

from chassis.settings import ServiceSettings

DEV_SURVEY_SECRET = "dev-only-survey-secret"


class TicketsSettings(ServiceSettings):
    # Base of the public survey links: <base>/v1/public/csat/<token> (the gateway's URL).
    public_base_url: str = "http://127.0.0.1:8000"
    # How long a CSAT / NPS link works.
    csat_token_ttl_hours: int = 24 * 14
    nps_token_ttl_hours: int = 24 * 30
    # Minutes before a due time at which sla.warning is sent, for policies that do not say.
    sla_warning_minutes: int = 30
    # How often the SLA scheduler looks for due clocks (it also wakes at the next due time
    # and after every write that set one).
    scheduler_poll_seconds: float = 5.0
    scheduler_batch_size: int = 200
    # Key of the HMAC that derives survey tokens from survey ids: only a hash of each token
    # is stored, yet the link can still be shown on the ticket. Required outside dev/test.
    survey_secret: str = DEV_SURVEY_SECRET

    @model_validator(mode="after")
    def _refuse_dev_survey_secret(self) -> TicketsSettings:
        if self.env == "prod" and self.survey_secret == DEV_SURVEY_SECRET:
            raise ValueError("CRM_ENV=prod needs TICKETS_SURVEY_SECRET")
        return self
