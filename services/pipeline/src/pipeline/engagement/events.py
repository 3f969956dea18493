"""Mapping of activity and task changes to the contracts (crm.pipeline.v1) and the outbox.

The Activity message carries no body on purpose: bodies are personal data and stay here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import outbox
from chassis.events import OutgoingEvent
from crm.common.v1.common_pb2 import EventMeta
from crm.pipeline.v1 import pipeline_pb2 as pb
from crm.registry import ce_type_for

SOURCE = "crm/pipeline"

Row = Mapping[str, Any]


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def activity_message(row: Row, version: int | None = None) -> pb.Activity:
    return pb.Activity(
        id=str(row["id"]),
        type=row["type"],
        subject=_s(row.get("subject")),
        contact_id=_s(row.get("contact_id")),
        deal_id=_s(row.get("deal_id")),
        owner_id=row["owner_id"],
        occurred_at=_ts(row["occurred_at"]),
        duration_seconds=row.get("duration_seconds") or 0,
        outcome=_s(row.get("outcome")),
        version=version if version is not None else row["version"],
    )


def task_message(row: Row, version: int | None = None) -> pb.Task:
    return pb.Task(
        id=str(row["id"]),
        title=row["title"],
        due_at=_ts(row.get("due_at")),
        remind_at=_ts(row.get("remind_at")),
        assignee_id=row["assignee_id"],
        contact_id=_s(row.get("contact_id")),
        deal_id=_s(row.get("deal_id")),
        status=row["status"],
        priority=row["priority"],
        version=version if version is not None else row["version"],
    )


@dataclass(frozen=True)
class Actor:
    """Who wrote (token subject, or a system name) and where the write came from."""

    sub: str
    origin: str


class EventSink:
    """Builds the events of one unit of work and adds them to the session's outbox."""

    def __init__(self, session: AsyncSession, actor: Actor) -> None:
        self.session = session
        self.actor = actor

    def _meta(
        self, tenant: str, aggregate_id: Any, version: int, at: datetime, changed: Sequence[str]
    ) -> EventMeta:
        return EventMeta(
            tenant_id=tenant,
            aggregate_id=str(aggregate_id),
            version=version,
            actor=self.actor.sub,
            origin=self.actor.origin,
            occurred_at=_ts(at),
            changed_fields=list(changed),
        )

    def _emit(self, message: Message, tenant: str, aggregate_id: Any, version: int) -> None:
        outbox.add(
            self.session,
            OutgoingEvent(
                message=message,
                ce_type=ce_type_for(message),
                tenant=tenant,
                aggregate_id=str(aggregate_id),
                version=version,
                source=SOURCE,
            ),
        )

    # activities

    def activity_logged(self, row: Row) -> None:
        t, v = row["tenant_id"], row["version"]
        meta = self._meta(t, row["id"], v, row["updated_at"], ())
        self._emit(pb.ActivityLogged(meta=meta, activity=activity_message(row)), t, row["id"], v)

    def activity_updated(self, row: Row, changed: Sequence[str]) -> None:
        t, v = row["tenant_id"], row["version"]
        meta = self._meta(t, row["id"], v, row["updated_at"], changed)
        self._emit(pb.ActivityUpdated(meta=meta, activity=activity_message(row)), t, row["id"], v)

    def activity_deleted(self, row: Row, version: int, at: datetime) -> None:
        t = row["tenant_id"]
        meta = self._meta(t, row["id"], version, at, ())
        msg = pb.ActivityDeleted(meta=meta, activity=activity_message(row, version))
        self._emit(msg, t, row["id"], version)

    # tasks

    def task_created(self, row: Row) -> None:
        t, v = row["tenant_id"], row["version"]
        meta = self._meta(t, row["id"], v, row["updated_at"], ())
        self._emit(pb.TaskCreated(meta=meta, task=task_message(row)), t, row["id"], v)

    def task_updated(self, row: Row, changed: Sequence[str]) -> None:
        t, v = row["tenant_id"], row["version"]
        meta = self._meta(t, row["id"], v, row["updated_at"], changed)
        self._emit(pb.TaskUpdated(meta=meta, task=task_message(row)), t, row["id"], v)

    def task_deleted(self, row: Row, version: int, at: datetime) -> None:
        t = row["tenant_id"]
        meta = self._meta(t, row["id"], version, at, ())
        self._emit(
            pb.TaskDeleted(meta=meta, task=task_message(row, version)), t, row["id"], version
        )

    def task_reminder_due(self, row: Row, version: int, at: datetime) -> None:
        t = row["tenant_id"]
        meta = self._meta(t, row["id"], version, at, ())
        msg = pb.TaskReminderDue(meta=meta, task=task_message(row, version))
        self._emit(msg, t, row["id"], version)

    def task_overdue(self, row: Row, version: int, at: datetime) -> None:
        t = row["tenant_id"]
        meta = self._meta(t, row["id"], version, at, ())
        self._emit(
            pb.TaskOverdue(meta=meta, task=task_message(row, version)), t, row["id"], version
        )
