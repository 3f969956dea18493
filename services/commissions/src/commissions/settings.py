"""Settings of the commissions service (env prefix COMMISSIONS_, falling back to CRM_)."""

from __future__ import annotations

from chassis.settings import ServiceSettings


class CommissionsSettings(ServiceSettings):
    pass
