"""Contact operations: reads with visibility, writes through `ContactWriter`, delete, merge,
erase and duplicate detection. Raises domain errors, adds outbox events, never commits."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.db import ReadPool
from chassis.http import check_if_match, decode_cursor, encode_cursor
from chassis.problems import invalid
from contacts import dedup
from contacts import repository as repo
from contacts.access import Caller
from contacts.errors import ContactErased, ContactMergedAway, ContactNotFound
from contacts.events import EventSink
from contacts.models import ContactIn
from contacts.repository import ContactFilter, Sort
from contacts.validation import FieldError, ValidationFailed, coerce_filter_value
from contacts.writer import ContactWriter, Outcome, Write, now, raise_for

Row = dict[str, Any]
PERSONAL = ("first_name", "last_name", "email", "phone", "lead_source", "consent")


def parse_sort(value: str, allowed: Sequence[str]) -> Sort:
    name = value.removeprefix("-")
    if name not in allowed:
        raise invalid("sort", f"must be one of {', '.join(allowed)} (prefix - for descending)")
    return Sort(name, value.startswith("-"))


def parse_cursor(cursor: str | None, sort: Sort) -> tuple[Any, uuid.UUID] | None:
    data = decode_cursor(cursor)
    if data is None:
        return None
    try:
        if data["s"] != [sort.field, sort.descending]:
            raise invalid("cursor", "was issued for another sort order")
        value = data["v"]
        if sort.field in ("created_at", "updated_at"):
            value = datetime.fromisoformat(value)
        return value, uuid.UUID(data["id"])
    except (KeyError, TypeError, ValueError) as e:
        raise invalid("cursor", "not a cursor returned by this API") from e


def page(rows: list[Row], sort: Sort, limit: int) -> tuple[list[Row], str | None]:
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    value = repo.sort_value(last, sort)
    return rows, encode_cursor(
        {
            "s": [sort.field, sort.descending],
            "v": value.isoformat() if isinstance(value, datetime) else value,
            "id": str(last["id"]),
        }
    )


async def plain_read(
    caller: Caller,
    reads: ReadPool,
    read: Callable[[ReadPool, str, uuid.UUID], Awaitable[Row | None]],
    row_id: uuid.UUID,
) -> Row | None:
    """One row for a plain GET, on the raw read pool (no transaction, no session); None for
    a caller who sees nothing. The service then applies its own visibility rules."""
    if caller.sees_nothing:
        return None
    return await read(reads, caller.tenant, row_id)


class ContactService:
    def __init__(
        self, session: AsyncSession, caller: Caller, region: str, reads: ReadPool | None = None
    ) -> None:
        self.session = session
        self.caller = caller
        self.reads = reads
        self.events = EventSink(session, caller.principal, caller.origin)
        self.writer = ContactWriter(session, caller, region, self.events)

    # -- reads ---------------------------------------------------------------------------------

    async def _visible(
        self, contact_id: uuid.UUID, *, for_update: bool = False, allow_erased: bool = False
    ) -> Row:
        row = None
        if not self.caller.sees_nothing:
            row = await repo.get_contact(
                self.session, self.caller.tenant, contact_id, for_update=for_update
            )
        return self._shown(contact_id, row, allow_erased=allow_erased)

    def _shown(self, contact_id: uuid.UUID, row: Row | None, *, allow_erased: bool = False) -> Row:
        if row is None or row["deleted_at"] is not None or not self.caller.can_see(row):
            raise ContactNotFound(contact_id)
        if row["merged_into_id"] is not None:
            raise ContactMergedAway(contact_id, row["merged_into_id"])
        if row["erased_at"] is not None and not allow_erased:
            raise ContactErased(contact_id)
        return row

    async def get(self, contact_id: uuid.UUID) -> Row:
        if self.reads is None:
            return await self._visible(contact_id)
        row = await plain_read(self.caller, self.reads, repo.read_contact, contact_id)
        return self._shown(contact_id, row)

    async def search(
        self, f: ContactFilter, cf: Mapping[str, str], sort: str, cursor: str | None, limit: int
    ) -> tuple[list[Row], str | None]:
        order = parse_sort(sort, repo.CONTACT_SORTS)
        after = parse_cursor(cursor, order)
        if self.caller.sees_nothing:
            return [], None
        if cf:
            specs = await repo.field_specs(self.session, self.caller.tenant, "contact")
            errors: list[FieldError] = []
            for key, raw in cf.items():
                spec = specs.get(key)
                if spec is None:
                    errors.append(FieldError((f"cf.{key}",), "no custom field with this key"))
                    continue
                try:
                    f.custom_fields[key] = coerce_filter_value(spec, raw)
                except ValueError as e:
                    errors.append(FieldError((f"cf.{key}",), str(e)))
            if errors:
                raise ValidationFailed(errors)
        rows = await repo.list_contacts(
            self.session, self.caller.tenant, self.caller.owner_scope, f, order, after, limit
        )
        return page(rows, order, limit)

    async def duplicates(
        self, contact_id: uuid.UUID, threshold: float, limit: int
    ) -> list[tuple[Row, float, list[str]]]:
        target = await self._visible(contact_id)
        candidates = await repo.duplicate_candidates(
            self.session, self.caller.tenant, self.caller.owner_scope, target
        )
        names = await repo.company_names(
            self.session,
            self.caller.tenant,
            [target.get("company_id"), *(c.get("company_id") for c in candidates)],
        )
        scored = []
        for c in candidates:
            score, reasons = dedup.score(target, c, names)
            if score >= threshold:
                scored.append((c, score, reasons))
        scored.sort(key=lambda t: (-t[1], str(t[0]["id"])))
        return scored[:limit]

    # -- writes --------------------------------------------------------------------------------

    async def create(self, body: ContactIn) -> Row:
        self.caller.require_writer()
        [outcome] = await self.writer.apply(
            [Write(0, body, set(body.model_fields_set), create_only=True)]
        )
        raise_for(outcome)
        assert outcome.row is not None
        return outcome.row

    async def update(self, contact_id: uuid.UUID, body: ContactIn, if_match: str | None) -> Row:
        self.caller.require_writer()
        row = await self._visible(contact_id, for_update=True)
        check_if_match(if_match, row["version"])
        [outcome] = await self.writer.apply(
            [Write(0, body, set(body.model_fields_set), target_id=contact_id)],
            locked={contact_id: row},
        )
        raise_for(outcome)
        assert outcome.row is not None
        return outcome.row

    async def upsert_by_external_id(
        self, system: str, external_id: str, body: ContactIn, if_match: str | None
    ) -> tuple[Row, bool]:
        self.caller.require_writer()
        write = Write(
            0, body, set(body.model_fields_set), key=(system, external_id), if_match=if_match
        )
        [outcome] = await self.writer.apply([write])
        raise_for(outcome)
        assert outcome.row is not None
        return outcome.row, outcome.status == "created"

    async def batch(self, items: Sequence[Any]) -> list[Outcome]:
        self.caller.require_writer()
        return await self.writer.apply([Write.parse(i, item) for i, item in enumerate(items)])

    async def delete(self, contact_id: uuid.UUID, if_match: str | None) -> None:
        self.caller.require_writer()
        row = await self._visible(contact_id, for_update=True)
        check_if_match(if_match, row["version"])
        ts = now()
        row.update(deleted_at=ts, updated_at=ts, version=row["version"] + 1)
        await repo.update_contacts(self.session, [row])
        await repo.remove_external_ids_of_contacts(self.session, self.caller.tenant, [contact_id])
        self.events.contact_deleted(row)

    async def merge(
        self, survivor_id: uuid.UUID, duplicate_ids: Sequence[uuid.UUID], if_match: str | None
    ) -> Row:
        self.caller.require_writer()
        survivor = await self._visible(survivor_id, for_update=True)
        if if_match is not None:
            check_if_match(if_match, survivor["version"])
        errors: list[FieldError] = []
        ids = list(dict.fromkeys(duplicate_ids))
        for i, dup in enumerate(duplicate_ids):
            if dup == survivor_id:
                errors.append(
                    FieldError(("duplicate_ids", i), "cannot merge a contact into itself")
                )
        rows = {
            r["id"]: r
            for r in await repo.get_contacts(
                self.session,
                self.caller.tenant,
                [i for i in ids if i != survivor_id],
                for_update=True,
            )
        }
        for i, dup in enumerate(duplicate_ids):
            row = rows.get(dup)
            if dup == survivor_id:
                continue
            if row is None or row["deleted_at"] is not None or not self.caller.can_see(row):
                errors.append(FieldError(("duplicate_ids", i), "no such contact"))
            elif row["merged_into_id"] is not None or row["erased_at"] is not None:
                errors.append(FieldError(("duplicate_ids", i), "was already merged or erased"))
        if errors:
            raise ValidationFailed(errors)
        losers = [rows[i] for i in ids]
        new = copy.deepcopy(survivor)
        new.update(dedup.pick_merged(survivor, losers))
        new.update(version=survivor["version"] + 1, updated_at=now())
        await repo.update_contacts(self.session, [new])
        await repo.repoint_merged(self.session, self.caller.tenant, ids, survivor_id)
        self.events.contact_merged(new, ids)
        return new

    async def erase(self, contact_id: uuid.UUID) -> Row:
        """GDPR erasure: personal data nulled, a tombstone kept; also scrubs the tombstones of
        contacts merged into this one (they hold the same person's data)."""
        self.caller.require_admin()
        row = await repo.get_contact(self.session, self.caller.tenant, contact_id, for_update=True)
        if row is None:
            raise ContactNotFound(contact_id)
        if row["merged_into_id"] is not None:
            raise ContactMergedAway(contact_id, row["merged_into_id"])
        if row["erased_at"] is not None:
            raise ContactErased(contact_id)
        ts = now()
        row.update({f: None for f in PERSONAL})
        row.update(
            custom_fields={},
            external_ids={},
            tags=[],
            erased_at=ts,
            updated_at=ts,
            version=row["version"] + 1,
        )
        await repo.update_contacts(self.session, [row])
        await repo.remove_external_ids_of_contacts(self.session, self.caller.tenant, [contact_id])
        await repo.scrub_tombstones(self.session, self.caller.tenant, contact_id, ts)
        self.events.contact_erased(row)
        return row
