"""Helpers for tests of the pipeline service (like chassis.testing, shipped with the code so
every part's tests can use them; tests cannot import each other in importlib mode).

`CoreApi` arranges teams, pipelines and deals through the HTTP API, runs SQL on the
service's database, reads what the relay published on the CRM_PIPELINE stream, and
publishes contacts events for the consumers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
from fastapi import FastAPI
from google.protobuf.message import Message

from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.testing import Infra, wait_for
from crm.registry import ce_type_for

DEFAULT_STAGES: list[dict[str, Any]] = [
    {"name": "Qualify", "probability": 10, "forecast_category": "pipeline"},
    {"name": "Proposal", "probability": 40, "forecast_category": "best_case"},
    {"name": "Negotiation", "probability": 70, "forecast_category": "commit"},
    {"name": "Won", "probability": 100, "forecast_category": "closed", "is_won": True},
    {"name": "Lost", "probability": 0, "forecast_category": "omitted", "is_lost": True},
]


class CoreApi:
    """Thin helpers over the HTTP API and the infrastructure of a running pipeline app."""

    def __init__(self, client: Any, infra: Infra, db_url: str, app: FastAPI) -> None:
        self.client = client
        self.infra = infra
        self.db_url = db_url
        self.app = app

    def h(
        self, role: str = "admin", sub: str = "user-1", tenant: str = "acme", **extra: str
    ) -> dict[str, str]:
        return {**self.infra.auth(tenant=tenant, roles=[role], sub=sub), **extra}

    async def _post(self, url: str, body: Any, headers: Mapping[str, str] | None) -> Any:
        r = await self.client.post(url, json=body, headers=dict(headers or self.h()))
        assert r.status_code in (200, 201), r.text
        return r.json()

    async def team(
        self,
        name: str = "East",
        members: list[dict[str, str]] | None = None,
        parent_id: str | None = None,
    ) -> dict[str, Any]:
        body = {"name": name, "parent_id": parent_id, "members": members or []}
        return dict(await self._post("/v1/teams", body, None))

    async def pipeline(
        self, name: str = "New business", stages: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "stages": stages or DEFAULT_STAGES}
        return dict(await self._post("/v1/pipelines", body, None))

    async def deal(
        self,
        pipeline: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        body = {
            "name": "Acme renewal",
            "pipeline_id": pipeline["id"],
            "amount": "1000.00",
            "currency": "USD",
            **fields,
        }
        if "line_items" in fields and "amount" not in fields:
            del body["amount"]  # the amount derives from the lines
        return dict(await self._post("/v1/deals", body, headers))

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(asyncpg_dsn(self.db_url))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def define_field(
        self,
        key: str,
        type_: str,
        *,
        object_type: str = "deal",
        required: bool = False,
        options: list[str] | None = None,
    ) -> None:
        """A custom field definition in the replica, as the contacts consumer writes it."""
        await self.sql(
            "INSERT INTO custom_field_definitions (tenant_id, object_type, key, label, type, "
            "required, options, version) VALUES ('acme', $1, $2, $2, $3, $4, $5, 1)",
            object_type,
            key,
            type_,
            required,
            options or [],
        )

    async def stream(self, name: str = "CRM_PIPELINE") -> list[Any]:
        js = self.app.state.bus.js
        try:
            info = await js.stream_info(name)
        except Exception:
            return []
        if not info.state.messages:
            return []
        return [
            await js.get_msg(name, seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]

    async def events(self, count: int, subject_filter: str = "") -> list[Any]:
        """Wait until CRM_PIPELINE holds `count` messages whose subject contains the filter;
        return all of them (in stream order)."""

        async def probe() -> list[Any]:
            msgs = [m for m in await self.stream() if subject_filter in m.subject]
            return msgs if len(msgs) >= count else []

        found: list[Any] = await wait_for(
            probe, timeout=10, message=f"{count} events {subject_filter}"
        )
        return found

    async def publish_contacts_event(
        self, message: Message, aggregate_id: str, version: int, tenant: str = "acme"
    ) -> None:
        """Publish a contacts event the way the contacts relay does (CloudEvents headers)."""
        event = OutgoingEvent(
            message=message,
            ce_type=ce_type_for(message),
            tenant=tenant,
            aggregate_id=aggregate_id,
            version=version,
            source="crm/contacts",
        )
        await self.app.state.bus.js.publish(
            event.subject, message.SerializeToString(), headers=event.headers()
        )


def parse(msg: Any, cls: type[Message]) -> Any:
    """The body of a stream message as `cls`, checking its ce-dataschema."""
    assert msg.headers["ce-dataschema"] == cls.DESCRIPTOR.full_name
    out = cls()
    out.ParseFromString(msg.data)
    return out


def new_id() -> str:
    return str(uuid.uuid4())
