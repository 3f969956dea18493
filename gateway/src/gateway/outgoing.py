"""The events the gateway itself publishes (context `customers`: customer analytics, webhook
subscriptions), built one way: the message's `meta` filled in, the ce-type from the registry,
written by the caller to the outbox in its own transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from chassis.events import OutgoingEvent
from crm.common.v1.common_pb2 import EventMeta
from crm.registry import ce_type_for

SOURCE = "crm/gateway"


def outgoing_event(
    msg: Any,
    *,
    tenant: str,
    aggregate_id: str,
    version: int,
    source: str,
    occurred_at: datetime,
    actor: str = "",
    origin: str = "",
) -> OutgoingEvent:
    """`msg` (a registered message with a `meta` field) as an outbox event of `source`, its
    `meta` filled in and its ce-type from the registry."""
    at = Timestamp()
    at.FromDatetime(occurred_at)
    msg.meta.CopyFrom(
        EventMeta(
            tenant_id=tenant,
            aggregate_id=aggregate_id,
            version=version,
            actor=actor,
            origin=origin,
            occurred_at=at,
        )
    )
    return OutgoingEvent(
        message=msg,
        ce_type=ce_type_for(msg),
        tenant=tenant,
        aggregate_id=aggregate_id,
        version=version,
        source=source,
    )


def gateway_event(
    msg: Any, *, tenant: str, aggregate_id: str, version: int, origin: str, now: datetime
) -> OutgoingEvent:
    """`msg` as an outbox event of the gateway."""
    return outgoing_event(
        msg,
        tenant=tenant,
        aggregate_id=aggregate_id,
        version=version,
        source=SOURCE,
        occurred_at=now,
        actor="gateway",
        origin=origin,
    )
