"""The `contact` and `company` sections, from the contacts service's events."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from crm.common.v1.common_pb2 import EventMeta
from crm.contacts.v1 import contacts_pb2 as pb
from gateway.readmodel import document, timeline
from gateway.readmodel.analytics import metrics
from gateway.readmodel.sections.common import occurred, opt, time_of, timeline_entry
from gateway.readmodel.timeline import Entry

consumer = Consumer("customer-360", context="contacts", aggregates=["contact", "company"])

_CONSENT_PREFIX = "CONSENT_STATUS_"


def contact_section(c: pb.Contact) -> dict[str, Any]:
    status = pb.ConsentStatus.Name(c.consent.email_marketing).removeprefix(_CONSENT_PREFIX)
    return {
        "id": c.id,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "email": opt(c.email),
        "phone": opt(c.phone),
        "company_id": opt(c.company_id),
        "owner_id": opt(c.owner_id),
        "lifecycle_stage": opt(c.lifecycle_stage),
        "lead_source": opt(c.lead_source),
        "tags": list(c.tags),
        "custom_fields": json_format.MessageToDict(c.custom_fields),
        "external_ids": dict(c.external_ids),
        "consent": {
            "email_marketing": "unknown" if status == "UNSPECIFIED" else status.lower(),
            "legal_basis": opt(c.consent.legal_basis),
            "updated_at": time_of(c.consent.updated_at),
        },
        "created_at": time_of(c.created_at),
        "updated_at": time_of(c.updated_at),
        "version": c.version,
    }


def company_section(c: pb.Company) -> dict[str, Any]:
    revenue = c.annual_revenue
    return {
        "id": c.id,
        "name": c.name,
        "domain": opt(c.domain),
        "industry": opt(c.industry),
        "employees": c.employees or None,
        "annual_revenue": (
            {"amount": revenue.amount, "currency": revenue.currency}
            if c.HasField("annual_revenue")
            else None
        ),
        "owner_id": opt(c.owner_id),
        "tags": list(c.tags),
        "custom_fields": json_format.MessageToDict(c.custom_fields),
        "external_ids": dict(c.external_ids),
        "created_at": time_of(c.created_at),
        "updated_at": time_of(c.updated_at),
        "version": c.version,
    }


def _fields_summary(what: str, fields: list[str]) -> str:
    if not fields:
        return f"{what} updated"
    shown = ", ".join(fields[:5])
    more = f" and {len(fields) - 5} more" if len(fields) > 5 else ""
    return f"{what} updated: {shown}{more}"


async def _apply_contact(
    session: AsyncSession, event: IncomingEvent, meta: EventMeta, contact: pb.Contact, entry: Entry
) -> None:
    await _apply_contacts(session, [(event, meta, contact, entry)])


async def _tombstone_snapshot(session: AsyncSession, event: IncomingEvent, survivor: str) -> None:
    """A merged-away contact's snapshot: it lives on in its survivor."""
    await document.tombstone(
        session,
        tenant=event.tenant,
        contact_id=event.aggregate_id,
        state="merged",
        version=event.version,
    )
    await timeline.repoint(session, event.tenant, [event.aggregate_id], survivor)


async def _apply_contacts(
    session: AsyncSession, items: list[tuple[IncomingEvent, EventMeta, pb.Contact, Entry]]
) -> None:
    """A run of created/updated events with few statements: documents and timeline entries
    each in one executemany, in stream order (a tombstone snapshot flushes what precedes
    it and is applied on its own)."""
    docs: list[dict[str, Any]] = []
    entries: list[tuple[str, str, Entry]] = []
    starting: dict[str, document.Start] = {}

    async def flush() -> None:
        # In key order, as the section consumers lock the rows (`pending` rows), against
        # deadlocks; a stable sort keeps a contact's versions in order (they are gated anyway).
        docs.sort(key=lambda d: (d["tenant"], d["contact_id"]))
        # A new document is born with the metrics of "nothing known" (the tenant's weights).
        for d in docs:
            if d["tenant"] not in starting:
                empty = await metrics.empty_metrics(session, d["tenant"])
                starting[d["tenant"]] = document.Start.with_metrics(empty)
            document.start_with(d, starting[d["tenant"]])
        await document.upsert_contacts(session, docs)
        await timeline.record_many(session, entries)
        # Items of other sections (a deal, a ticket) may have arrived before the contact.
        by_tenant: dict[str, list[str]] = {}
        for d in docs:
            by_tenant.setdefault(d["tenant"], []).append(d["contact_id"])
        for tenant, ids in by_tenant.items():
            await document.rebuild(session, tenant, ids)
        docs.clear()
        entries.clear()

    for event, meta, contact, entry in items:
        if contact.merged_into_id:
            await flush()
            await _tombstone_snapshot(session, event, contact.merged_into_id)
            continue
        docs.append(
            document.contact_params(
                tenant=event.tenant,
                contact_id=event.aggregate_id,
                company_id=opt(contact.company_id),
                owner_id=opt(contact.owner_id),
                version=event.version,
                contact=contact_section(contact),
                as_of=occurred(meta, event),
            )
        )
        entries.append((event.tenant, event.aggregate_id, entry))
    await flush()


@consumer.on_many("crm.contacts.contact.created.v1")
async def contacts_created(session: AsyncSession, events: list[IncomingEvent]) -> None:
    items = []
    for event in events:
        msg = event.parse(pb.ContactCreated)
        entry = timeline_entry(event, msg.meta, "contact.created", "Contact created")
        items.append((event, msg.meta, msg.contact, entry))
    await _apply_contacts(session, items)


@consumer.on_many("crm.contacts.contact.updated.v1")
async def contacts_updated(session: AsyncSession, events: list[IncomingEvent]) -> None:
    items = []
    for event in events:
        msg = event.parse(pb.ContactUpdated)
        fields = list(msg.meta.changed_fields)
        entry = timeline_entry(
            event,
            msg.meta,
            "contact.updated",
            _fields_summary("Contact", fields),
            changed_fields=fields,
        )
        items.append((event, msg.meta, msg.contact, entry))
    await _apply_contacts(session, items)


@consumer.on("crm.contacts.contact.merged.v1")
async def contact_merged(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.ContactMerged)
    losers = [i for i in msg.merged_ids if i != event.aggregate_id]
    n = len(losers)
    summary = f"Merged {n} duplicate contact{'s' if n != 1 else ''} into this contact"
    await _apply_contact(
        session,
        event,
        msg.meta,
        msg.survivor,
        timeline_entry(event, msg.meta, "contact.merged", summary, merged_ids=losers),
    )
    if losers:
        await timeline.repoint(session, event.tenant, losers, event.aggregate_id)
        await document.repoint_items(
            session, tenant=event.tenant, from_ids=losers, to_id=event.aggregate_id
        )
        await document.tombstone_many(
            session, tenant=event.tenant, contact_ids=losers, state="merged"
        )


async def _end_customer(session: AsyncSession, event: IncomingEvent, state: str) -> None:
    """Keep only that the id existed (so a late event cannot bring it back) and purge its
    timeline."""
    await document.tombstone(
        session,
        tenant=event.tenant,
        contact_id=event.aggregate_id,
        state=state,
        version=event.version,
    )
    await timeline.purge(session, event.tenant, event.aggregate_id)
    await document.purge_items(session, tenant=event.tenant, contact_id=event.aggregate_id)


@consumer.on("crm.contacts.contact.deleted.v1")
async def contact_deleted(session: AsyncSession, event: IncomingEvent) -> None:
    await _end_customer(session, event, "deleted")


@consumer.on("crm.contacts.contact.erased.v1")
async def contact_erased(session: AsyncSession, event: IncomingEvent) -> None:
    """Right to erasure: nothing about the person stays, only that an id was erased."""
    await _end_customer(session, event, "erased")


async def _apply_company(
    session: AsyncSession, event: IncomingEvent, meta: EventMeta, company: pb.Company, entry: Entry
) -> None:
    section = company_section(company)
    if await document.upsert_company(
        session,
        tenant=event.tenant,
        company_id=event.aggregate_id,
        company=section,
        version=event.version,
    ):
        await document.embed_company(
            session,
            tenant=event.tenant,
            company_id=event.aggregate_id,
            company=section,
            version=event.version,
            as_of=occurred(meta, event),
        )
    await timeline.record_for_company(session, event.tenant, event.aggregate_id, entry)


@consumer.on("crm.contacts.company.created.v1")
async def company_created(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.CompanyCreated)
    await _apply_company(
        session,
        event,
        msg.meta,
        msg.company,
        timeline_entry(
            event, msg.meta, "company.created", "Company created", company_id=event.aggregate_id
        ),
    )


@consumer.on("crm.contacts.company.updated.v1")
async def company_updated(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.CompanyUpdated)
    fields = list(msg.meta.changed_fields)
    await _apply_company(
        session,
        event,
        msg.meta,
        msg.company,
        timeline_entry(
            event,
            msg.meta,
            "company.updated",
            _fields_summary("Company", fields),
            company_id=event.aggregate_id,
            changed_fields=fields,
        ),
    )


@consumer.on("crm.contacts.company.deleted.v1")
async def company_deleted(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.CompanyDeleted)
    entry = timeline_entry(
        event, msg.meta, "company.deleted", "Company deleted", company_id=event.aggregate_id
    )
    await timeline.record_for_company(session, event.tenant, event.aggregate_id, entry)
    await document.delete_company(session, tenant=event.tenant, company_id=event.aggregate_id)
    await document.embed_company(
        session,
        tenant=event.tenant,
        company_id=event.aggregate_id,
        company=None,
        version=None,
        as_of=occurred(msg.meta, event),
    )
