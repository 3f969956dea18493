"""Mapping of domain rows to the proto contracts (crm.tickets.v1) and the outbox."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import outbox
from chassis.events import OutgoingEvent
from crm.common.v1.common_pb2 import EventMeta
from crm.registry import ce_type_for
from crm.tickets.v1 import tickets_pb2 as pb

SOURCE = "crm/tickets"
Row = Mapping[str, Any]


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    t = Timestamp()
    t.FromDatetime(value)
    return t


def struct(values: Mapping[str, Any] | None) -> Struct:
    s = Struct()
    if values:
        s.update(dict(values))
    return s


def s(value: Any) -> str:
    return "" if value is None else str(value)


def emit(
    session: AsyncSession,
    message: Message,
    *,
    tenant: str,
    aggregate_id: Any,
    version: int,
    actor: str,
    origin: str,
    occurred_at: datetime,
    changed: Sequence[str] = (),
) -> None:
    """Fill `message.meta` and add the event to the unit of work's outbox."""
    meta = EventMeta(
        tenant_id=tenant,
        aggregate_id=str(aggregate_id),
        version=version,
        actor=actor,
        origin=origin,
        occurred_at=ts(occurred_at),
        changed_fields=list(changed),
    )
    message.meta.CopyFrom(meta)  # type: ignore[attr-defined]
    outbox.add(
        session,
        OutgoingEvent(
            message=message,
            ce_type=ce_type_for(message),
            tenant=tenant,
            aggregate_id=str(aggregate_id),
            version=version,
            source=SOURCE,
            time=occurred_at,
        ),
    )


def clock_message(clock: Row) -> pb.SlaClock:
    breached = clock["breached_at"] is not None or (
        clock["fulfilled_at"] is not None
        and clock["due_at"] is not None
        and clock["fulfilled_at"] > clock["due_at"]
    )
    return pb.SlaClock(
        id=str(clock["id"]),
        metric=clock["metric"],
        target_minutes=clock["target_minutes"],
        due_at=ts(clock["due_at"]),
        fulfilled_at=ts(clock["fulfilled_at"]),
        breached=breached,
        paused=clock["running_since"] is None
        and clock["fulfilled_at"] is None
        and clock["stopped_at"] is None,
    )


def ticket_message(row: Row, clocks: Sequence[Row] = ()) -> pb.Ticket:
    return pb.Ticket(
        id=str(row["id"]),
        subject=row["subject"],
        description=row["description"] or "",
        requester_contact_id=s(row["requester_contact_id"]),
        company_id=s(row["company_id"]),
        channel=row["channel"],
        priority=row["priority"],
        type=row["type"],
        status=row["status"],
        group_id=s(row["group_id"]),
        assignee_id=s(row["assignee_id"]),
        tags=list(row["tags"] or []),
        custom_fields=struct(row["custom_fields"]),
        external_ids=dict(row["external_ids"] or {}),
        sla_policy_id=s(row["sla_policy_id"]),
        sla=[clock_message(c) for c in clocks],
        version=row["version"],
        created_at=ts(row["created_at"]),
        updated_at=ts(row["updated_at"]),
        solved_at=ts(row["solved_at"]),
        closed_at=ts(row["closed_at"]),
    )


def comment_message(row: Row) -> pb.Comment:
    return pb.Comment(
        id=str(row["id"]),
        body=row["body"],
        public=row["public"],
        author_type=row["author_type"],
        author_id=s(row["author_id"]),
        created_at=ts(row["created_at"]),
    )


def group_message(row: Row) -> pb.Group:
    return pb.Group(
        id=str(row["id"]),
        name=row["name"],
        agents=list(row["agents"]),
        strategy=row["strategy"],
        version=row["version"],
    )


def business_hours_message(row: Row) -> pb.BusinessHours:
    weekly = row["weekly"]
    return pb.BusinessHours(
        id=str(row["id"]),
        name=row["name"],
        timezone=row["timezone"],
        weekly=[
            pb.DayHours(
                day=day,
                intervals=[pb.TimeInterval(start=a, end=b) for a, b in weekly.get(day, [])],
            )
            for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
            if weekly.get(day)
        ],
        holidays=[d.isoformat() for d in row["holidays"]],
        version=row["version"],
    )


def policy_message(row: Row) -> pb.SlaPolicy:
    return pb.SlaPolicy(
        id=str(row["id"]),
        name=row["name"],
        position=row["position"],
        business_hours_id=s(row["business_hours_id"]),
        conditions=struct(row["conditions"]),
        targets=[
            pb.SlaTargets(
                priority=p,
                first_response=t.get("first_response") or 0,
                next_response=t.get("next_response") or 0,
                resolution=t.get("resolution") or 0,
            )
            for p, t in row["targets"].items()
        ],
        warning_minutes=row["warning_minutes"] or 0,
        version=row["version"],
    )


def article_message(row: Row) -> pb.KbArticle:
    return pb.KbArticle(
        id=str(row["id"]),
        title=row["title"],
        body=row["body"],
        tags=list(row["tags"]),
        locale=row["locale"],
        status=row["status"],
        version=row["version"],
    )
