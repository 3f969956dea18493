"""CloudEvents 1.0 binary mode over NATS headers, protobuf bodies.

Headers: ce-specversion, ce-id, ce-source, ce-type, ce-time, ce-subject (the aggregate id),
ce-tenant, ce-sequence (the aggregate version, CloudEvents' sequence extension),
ce-dataschema (the proto message's full name), content-type, Nats-Msg-Id (= ce-id) and the
W3C traceparent.
"""

from __future__ import annotations

import builtins
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.message import Message

CONTENT_TYPE = "application/protobuf"
_CE_TYPE = re.compile(r"^crm\.([a-z0-9_]+)\.([a-z0-9_]+)\.([a-z0-9_]+)\.v(\d+)$")

M = TypeVar("M", bound=Message)


class MalformedEvent(ValueError):
    """An incoming message that is not a CloudEvent this platform can read."""


def subject_for(ce_type: str, tenant: str) -> str:
    """`crm.contacts.contact.created.v1` + `acme` -> `crm.contacts.acme.contact.created`."""
    m = _CE_TYPE.match(ce_type)
    if not m:
        raise ValueError(f"not a platform event type: {ce_type!r}")
    context, aggregate, event, _ = m.groups()
    return f"crm.{context}.{tenant}.{aggregate}.{event}"


def aggregate_of(ce_type: str) -> str:
    """`crm.contacts.contact.created.v1` -> `contacts.contact`."""
    m = _CE_TYPE.match(ce_type)
    if not m:
        raise MalformedEvent(f"not a platform event type: {ce_type!r}")
    return f"{m.group(1)}.{m.group(2)}"


def _now() -> datetime:
    return datetime.now(UTC)


def _format_time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class OutgoingEvent:
    """A domain event to publish: written to the outbox inside the caller's transaction."""

    message: Message
    ce_type: str
    tenant: str
    aggregate_id: str
    version: int
    source: str
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    time: datetime = field(default_factory=_now)

    @property
    def subject(self) -> str:
        return subject_for(self.ce_type, self.tenant)

    def headers(self, traceparent: str | None = None) -> dict[str, str]:
        h = {
            "ce-specversion": "1.0",
            "ce-id": str(self.id),
            "ce-source": self.source,
            "ce-type": self.ce_type,
            "ce-time": _format_time(self.time),
            "ce-subject": self.aggregate_id,
            "ce-tenant": self.tenant,
            "ce-sequence": str(self.version),
            "ce-dataschema": self.message.DESCRIPTOR.full_name,
            "content-type": CONTENT_TYPE,
            "Nats-Msg-Id": str(self.id),
        }
        if traceparent:
            h["traceparent"] = traceparent
        return h


@dataclass(frozen=True)
class IncomingEvent:
    """A received CloudEvent; `parse` turns its body into the contract's message."""

    id: str
    type: str
    source: str
    tenant: str
    aggregate_id: str
    version: int
    time: datetime
    dataschema: str
    data: bytes
    subject: str
    headers: dict[str, str]

    @property
    def aggregate(self) -> str:
        return aggregate_of(self.type)

    def parse(self, cls: builtins.type[M]) -> M:
        if cls.DESCRIPTOR.full_name != self.dataschema:
            raise MalformedEvent(
                f"event {self.id} carries {self.dataschema}, not {cls.DESCRIPTOR.full_name}"
            )
        msg = cls()
        msg.ParseFromString(self.data)
        return msg

    @classmethod
    def from_nats(cls, subject: str, headers: dict[str, str] | None, data: bytes) -> IncomingEvent:
        h = headers or {}
        try:
            if h["ce-specversion"] != "1.0":
                raise MalformedEvent(f"unsupported ce-specversion {h['ce-specversion']!r}")
            return cls(
                id=h["ce-id"],
                type=h["ce-type"],
                source=h["ce-source"],
                tenant=h["ce-tenant"],
                aggregate_id=h["ce-subject"],
                version=int(h["ce-sequence"]),
                time=datetime.fromisoformat(h["ce-time"].replace("Z", "+00:00")),
                dataschema=h.get("ce-dataschema", ""),
                data=data,
                subject=subject,
                headers=h,
            )
        except KeyError as e:
            raise MalformedEvent(f"missing CloudEvents header {e.args[0]}") from e
        except ValueError as e:
            raise MalformedEvent(str(e)) from e
