"""Mapping of domain changes to the proto contracts (crm.contacts.v1) and outbox events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import outbox
from chassis.auth import Principal
from chassis.events import OutgoingEvent
from crm.common.v1.common_pb2 import EventMeta, Money
from crm.contacts.v1 import contacts_pb2 as pb
from crm.registry import ce_type_for

SOURCE = "crm/contacts"

_CONSENT = {
    "granted": pb.CONSENT_STATUS_GRANTED,
    "denied": pb.CONSENT_STATUS_DENIED,
    "unknown": pb.CONSENT_STATUS_UNKNOWN,
}

Row = Mapping[str, Any]


def _ts(value: datetime | str | None) -> Timestamp | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _struct(values: Mapping[str, Any] | None) -> Struct:
    s = Struct()
    if values:
        s.update(dict(values))
    return s


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def contact_message(row: Row) -> pb.Contact:
    msg = pb.Contact(
        id=str(row["id"]),
        first_name=_s(row.get("first_name")),
        last_name=_s(row.get("last_name")),
        email=_s(row.get("email")),
        phone=_s(row.get("phone")),
        company_id=_s(row.get("company_id")),
        owner_id=_s(row.get("owner_id")),
        lifecycle_stage=_s(row.get("lifecycle_stage")),
        lead_source=_s(row.get("lead_source")),
        tags=list(row.get("tags") or []),
        custom_fields=_struct(row.get("custom_fields")),
        external_ids=dict(row.get("external_ids") or {}),
        version=row["version"],
        merged_into_id=_s(row.get("merged_into_id")),
        created_at=_ts(row["created_at"]),
        updated_at=_ts(row["updated_at"]),
    )
    consent = row.get("consent")
    if consent:
        msg.consent.CopyFrom(
            pb.Consent(
                email_marketing=_CONSENT.get(
                    consent.get("email_marketing", "unknown"), pb.CONSENT_STATUS_UNKNOWN
                ),
                legal_basis=_s(consent.get("legal_basis")),
                updated_at=_ts(consent.get("updated_at")),
            )
        )
    return msg


def company_message(row: Row) -> pb.Company:
    msg = pb.Company(
        id=str(row["id"]),
        name=_s(row.get("name")),
        domain=_s(row.get("domain")),
        industry=_s(row.get("industry")),
        employees=row.get("employees") or 0,
        owner_id=_s(row.get("owner_id")),
        tags=list(row.get("tags") or []),
        custom_fields=_struct(row.get("custom_fields")),
        external_ids=dict(row.get("external_ids") or {}),
        version=row["version"],
        created_at=_ts(row["created_at"]),
        updated_at=_ts(row["updated_at"]),
    )
    amount: Decimal | None = row.get("annual_revenue")
    if amount is not None:
        msg.annual_revenue.CopyFrom(
            Money(amount=format(amount, "f"), currency=_s(row.get("annual_revenue_currency")))
        )
    return msg


def definition_message(row: Row) -> pb.CustomFieldDefinition:
    return pb.CustomFieldDefinition(
        object_type=row["object_type"],
        key=row["key"],
        label=row["label"],
        type=row["type"],
        required=row["required"],
        options=list(row["options"]),
        version=row["version"],
    )


class EventSink:
    """Builds the events of one unit of work with the caller's actor and origin, and adds
    them to the outbox of the session."""

    def __init__(self, session: AsyncSession, principal: Principal, origin: str) -> None:
        self.session = session
        self.principal = principal
        self.origin = origin

    def meta(
        self, aggregate_id: Any, version: int, at: datetime, changed: Sequence[str] = ()
    ) -> EventMeta:
        return EventMeta(
            tenant_id=self.principal.tenant,
            aggregate_id=str(aggregate_id),
            version=version,
            actor=self.principal.sub,
            origin=self.origin,
            occurred_at=_ts(at),
            changed_fields=list(changed),
        )

    def emit(self, message: Message, aggregate_id: Any, version: int) -> None:
        outbox.add(
            self.session,
            OutgoingEvent(
                message=message,
                ce_type=ce_type_for(message),
                tenant=self.principal.tenant,
                aggregate_id=str(aggregate_id),
                version=version,
                source=SOURCE,
            ),
        )

    def contact_created(self, row: Row) -> None:
        meta = self.meta(row["id"], row["version"], row["updated_at"])
        self.emit(
            pb.ContactCreated(meta=meta, contact=contact_message(row)), row["id"], row["version"]
        )

    def contact_updated(self, row: Row, changed: Sequence[str]) -> None:
        meta = self.meta(row["id"], row["version"], row["updated_at"], changed)
        self.emit(
            pb.ContactUpdated(meta=meta, contact=contact_message(row)), row["id"], row["version"]
        )

    def contact_deleted(self, row: Row) -> None:
        meta = self.meta(row["id"], row["version"], row["updated_at"])
        self.emit(pb.ContactDeleted(meta=meta), row["id"], row["version"])

    def contact_merged(self, survivor: Row, merged_ids: Sequence[Any]) -> None:
        meta = self.meta(survivor["id"], survivor["version"], survivor["updated_at"])
        self.emit(
            pb.ContactMerged(
                meta=meta,
                survivor_id=str(survivor["id"]),
                merged_ids=[str(i) for i in merged_ids],
                survivor=contact_message(survivor),
            ),
            survivor["id"],
            survivor["version"],
        )

    def contact_erased(self, row: Row) -> None:
        meta = self.meta(row["id"], row["version"], row["updated_at"])
        self.emit(pb.ContactErased(meta=meta), row["id"], row["version"])

    def company_created(self, row: Row) -> None:
        meta = self.meta(row["id"], row["version"], row["updated_at"])
        self.emit(
            pb.CompanyCreated(meta=meta, company=company_message(row)), row["id"], row["version"]
        )

    def company_updated(self, row: Row, changed: Sequence[str]) -> None:
        meta = self.meta(row["id"], row["version"], row["updated_at"], changed)
        self.emit(
            pb.CompanyUpdated(meta=meta, company=company_message(row)), row["id"], row["version"]
        )

    def company_deleted(self, row: Row) -> None:
        meta = self.meta(row["id"], row["version"], row["updated_at"])
        self.emit(pb.CompanyDeleted(meta=meta), row["id"], row["version"])

    def field_defined(self, row: Row) -> None:
        meta = self.meta(row["id"], row["version"], row["updated_at"])
        self.emit(
            pb.CustomFieldDefined(meta=meta, definition=definition_message(row)),
            row["id"],
            row["version"],
        )
