"""The one write path of contacts: POST, PATCH, PUT by external id, batch and imports all go
through `ContactWriter.apply`.

A call validates every item first (no database work per item), then resolves targets with
one query per kind of key (external ids, emails, companies), applies the items in order in
memory (so a later item may update a contact an earlier item of the same batch created), and
finally writes with a handful of bulk statements and one outbox event per version bump."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.http import check_if_match
from chassis.problems import Conflict, NotFound, PreconditionFailed, ProblemError
from contacts import repository as repo
from contacts.access import Caller
from contacts.events import EventSink
from contacts.models import CONTACT_SCALARS, ContactIn
from contacts.validation import (
    FieldError,
    FieldSpec,
    ValidationFailed,
    apply_changes,
    clean_tags,
    normalize_email,
    normalize_phone,
    pydantic_errors,
    validate_custom_fields,
)

Row = dict[str, Any]
Kind = Literal["invalid", "conflict", "not_found", "precondition"]
SCALARS = CONTACT_SCALARS
TRACKED = (*SCALARS, "tags", "external_ids", "consent")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Write:
    """One requested write. `target_id` (PATCH) or `key` (PUT by external id) name the
    contact; otherwise it is matched by external ids, then email, unless `create_only`."""

    index: int
    data: ContactIn | None
    fields: set[str]
    target_id: uuid.UUID | None = None
    key: tuple[str, str] | None = None
    create_only: bool = False
    if_match: str | None = None
    errors: list[FieldError] = field(default_factory=list)

    @classmethod
    def parse(cls, index: int, raw: Any) -> Write:
        try:
            data = ContactIn.model_validate(raw)
        except ValidationError as e:
            return cls(index, None, set(), errors=pydantic_errors(e))
        return cls(index, data, set(data.model_fields_set))


@dataclass
class Outcome:
    index: int
    status: Literal["created", "updated", "error"]
    row: Row | None = None
    errors: list[FieldError] = field(default_factory=list)
    kind: Kind = "invalid"
    changed: list[str] = field(default_factory=list)


class ItemRejected(Exception):
    def __init__(self, kind: Kind, errors: list[FieldError]) -> None:
        self.kind = kind
        self.errors = errors


def copy_row(row: Row) -> Row:
    """A copy whose mutable values (lists, maps) are independent of the original."""
    out = dict(row)
    for name in ("tags", "custom_fields", "external_ids", "consent"):
        value = out.get(name)
        if isinstance(value, dict | list):
            out[name] = copy.deepcopy(value) if name == "custom_fields" else value.copy()
    return out


def changed_fields(old: Row, new: Row) -> list[str]:
    changed = [f for f in TRACKED if old.get(f) != new.get(f)]
    old_cf, new_cf = old.get("custom_fields") or {}, new.get("custom_fields") or {}
    changed += [
        f"custom_fields.{k}"
        for k in sorted(set(old_cf) | set(new_cf))
        if old_cf.get(k) != new_cf.get(k)
    ]
    return changed


class ContactWriter:
    def __init__(
        self, session: AsyncSession, caller: Caller, region: str, events: EventSink
    ) -> None:
        self.session = session
        self.caller = caller
        self.region = region
        self.events = events

    # -- validation (pure, per item) ---------------------------------------------------------

    def normalize(self, w: Write, specs: dict[str, FieldSpec]) -> Row:
        """The normalized changes of a write (raise ItemRejected with every field error)."""
        assert w.data is not None
        errors: list[FieldError] = []
        out: Row = {}
        for name in w.fields:
            value = getattr(w.data, name)
            if isinstance(value, str) and value == "":
                value = None
            try:
                if name == "email" and value is not None:
                    value = normalize_email(value)
                elif name == "phone" and value is not None:
                    value = normalize_phone(value, self.region)
                elif name == "tags":
                    value = clean_tags(value or [])
                elif name == "custom_fields":
                    value, errs = validate_custom_fields(value or {}, specs, creating=False)
                    errors += errs
                elif name == "external_ids":
                    value = dict(value or {})
                elif name == "consent" and value is not None:
                    value = {
                        "email_marketing": value.email_marketing,
                        "legal_basis": value.legal_basis,
                        "updated_at": (value.updated_at or now()).isoformat(),
                    }
            except ValueError as e:
                errors.append(FieldError((name,), str(e)))
                continue
            out[name] = value
        if w.key is not None:
            system, ext = w.key
            sent = (out.get("external_ids") or {}).get(system)
            if sent is not None and sent != ext:
                errors.append(
                    FieldError(("external_ids", system), "differs from the external id in the path")
                )
            out.setdefault("external_ids", {})
            out["external_ids"][system] = ext
        owner = out.get("owner_id")
        if not self.caller.sees_tenant and "owner_id" in out and owner != self.caller.sub:
            errors.append(FieldError(("owner_id",), "a sales rep can only own records themself"))
        if errors:
            raise ItemRejected("invalid", errors)
        return out

    # -- the batch ---------------------------------------------------------------------------

    async def apply(
        self, writes: Sequence[Write], locked: dict[uuid.UUID, Row] | None = None
    ) -> list[Outcome]:
        tenant = self.caller.tenant
        specs = await repo.field_specs(self.session, tenant, "contact")
        outcomes: dict[int, Outcome] = {}
        valid: list[tuple[Write, Row]] = []
        for w in writes:
            if w.errors:
                outcomes[w.index] = Outcome(w.index, "error", errors=w.errors)
                continue
            try:
                valid.append((w, self.normalize(w, specs)))
            except ItemRejected as e:
                outcomes[w.index] = Outcome(w.index, "error", errors=e.errors, kind=e.kind)

        ext_keys = [
            (s, v)
            for _, ch in valid
            for s, v in (ch.get("external_ids") or {}).items()
            if v is not None
        ]
        ext_owner = await repo.contact_ids_by_external(self.session, tenant, ext_keys)
        initial_ext = dict(ext_owner)
        emails = [
            ch["email"]
            for w, ch in valid
            if ch.get("email") and not w.create_only and w.target_id is None
        ]
        by_email = await repo.live_contact_ids_by_email(
            self.session, tenant, emails, self.caller.owner_scope
        )
        companies = await repo.company_ids_that_exist(
            self.session, tenant, [ch["company_id"] for _, ch in valid if ch.get("company_id")]
        )
        state: dict[uuid.UUID, Row] = dict(locked or {})
        wanted = set(ext_owner.values()) | {ids[0] for ids in by_email.values() if len(ids) == 1}
        wanted -= set(state)
        for row in await repo.get_contacts(self.session, tenant, sorted(wanted), for_update=True):
            state[row["id"]] = row
        for row in state.values():  # the side table holds every external id a row shows
            for key in (row.get("external_ids") or {}).items():
                ext_owner.setdefault(key, row["id"])
                initial_ext.setdefault(key, row["id"])
        new_ids: set[uuid.UUID] = set()
        dirty: set[uuid.UUID] = set()
        ctx = _Ctx(ext_owner, by_email, companies, state, specs)

        for w, changes in valid:
            try:
                outcome = self._apply_one(w, changes, ctx)
            except ItemRejected as e:
                outcomes[w.index] = Outcome(w.index, "error", errors=e.errors, kind=e.kind)
                continue
            outcomes[w.index] = outcome
            if outcome.row is None:
                continue
            snapshot = outcome.row
            # events are built now: the snapshot of this version, whatever later items do
            if outcome.status == "created":
                new_ids.add(snapshot["id"])
                self.events.contact_created(snapshot)
            elif outcome.changed:
                if snapshot["id"] not in new_ids:
                    dirty.add(snapshot["id"])
                self.events.contact_updated(snapshot, outcome.changed)

        await repo.insert_contacts(self.session, [state[i] for i in new_ids])
        await repo.update_contacts(self.session, [state[i] for i in dirty])
        removed = [k for k, v in initial_ext.items() if ext_owner.get(k) != v]
        added = [(k[0], k[1], v) for k, v in ext_owner.items() if initial_ext.get(k) != v]
        await repo.remove_contact_external_ids(self.session, tenant, removed)
        await repo.add_contact_external_ids(self.session, tenant, added)
        return [outcomes[w.index] for w in writes]

    def _apply_one(self, w: Write, changes: Row, ctx: _Ctx) -> Outcome:
        target = self._resolve(w, changes, ctx)
        if changes.get("company_id") and changes["company_id"] not in ctx.companies:
            raise ItemRejected("invalid", [FieldError(("company_id",), "no such company")])
        if target is None:
            return self._create(w, changes, ctx)
        old = ctx.state[target]
        if not self.caller.can_see(old):
            raise ItemRejected("not_found", [FieldError((), "contact not found")])
        if w.if_match is not None:
            try:
                check_if_match(w.if_match, old["version"])
            except PreconditionFailed as e:
                raise ItemRejected("precondition", [FieldError((), str(e))]) from None
        new = copy_row(old)
        apply_changes(new, old, changes)
        self._claim_external_ids(
            target, old.get("external_ids") or {}, new.get("external_ids") or {}, ctx
        )
        changed = changed_fields(old, new)
        if changed:
            new["version"] = old["version"] + 1
            new["updated_at"] = now()
            ctx.state[target] = new
            if old.get("email") != new.get("email"):
                self._move_email(target, old.get("email"), new.get("email"), ctx)
        return Outcome(w.index, "updated", row=ctx.state[target], changed=changed)

    def _resolve(self, w: Write, changes: Row, ctx: _Ctx) -> uuid.UUID | None:
        if w.target_id is not None:
            return w.target_id
        if w.create_only:
            return None
        keys = [(s, v) for s, v in (changes.get("external_ids") or {}).items() if v is not None]
        matches = {ctx.ext_owner[k] for k in keys if k in ctx.ext_owner}
        if len(matches) > 1:
            raise ItemRejected(
                "conflict",
                [FieldError(("external_ids",), "the external ids belong to different contacts")],
            )
        if matches:
            target = matches.pop()
            if target not in ctx.state:
                raise ItemRejected("not_found", [FieldError((), "contact not found")])
            return target
        email = changes.get("email")
        if email:
            ids = ctx.by_email.get(email, [])
            if len(ids) > 1:
                raise ItemRejected(
                    "conflict",
                    [
                        FieldError(
                            ("email",),
                            f"matches {len(ids)} contacts; send an external id to choose",
                        )
                    ],
                )
            if ids:
                return ids[0]
        return None

    def _create(self, w: Write, changes: Row, ctx: _Ctx) -> Outcome:
        custom = {k: v for k, v in (changes.get("custom_fields") or {}).items() if v is not None}
        missing = [
            FieldError(("custom_fields", k), "is required")
            for k, s in ctx.specs.items()
            if s.required and k not in custom
        ]
        if missing:
            raise ItemRejected("invalid", missing)
        ts = now()
        row: Row = {name: changes.get(name) for name in SCALARS}
        row.update(
            tenant_id=self.caller.tenant,
            id=uuid.uuid4(),
            tags=changes.get("tags") or [],
            custom_fields=custom,
            consent=changes.get("consent"),
            external_ids={
                k: v for k, v in (changes.get("external_ids") or {}).items() if v is not None
            },
            created_at=ts,
            updated_at=ts,
            version=1,
            merged_into_id=None,
            erased_at=None,
            deleted_at=None,
        )
        if row["owner_id"] is None and not self.caller.sees_tenant:
            row["owner_id"] = self.caller.sub
        self._claim_external_ids(row["id"], {}, row["external_ids"], ctx)
        ctx.state[row["id"]] = row
        if row["email"]:
            ctx.by_email.setdefault(row["email"], []).append(row["id"])
        return Outcome(w.index, "created", row=row)

    @staticmethod
    def _claim_external_ids(
        contact_id: uuid.UUID, old: dict[str, str], new: dict[str, str], ctx: _Ctx
    ) -> None:
        for system, value in new.items():
            holder = ctx.ext_owner.get((system, value))
            if holder is not None and holder != contact_id:
                raise ItemRejected(
                    "conflict",
                    [FieldError(("external_ids", system), "already identifies another contact")],
                )
        for system, value in old.items():
            if new.get(system) != value:
                ctx.ext_owner.pop((system, value), None)
        for system, value in new.items():
            ctx.ext_owner[(system, value)] = contact_id

    @staticmethod
    def _move_email(contact_id: uuid.UUID, old: str | None, new: str | None, ctx: _Ctx) -> None:
        if old and contact_id in ctx.by_email.get(old, []):
            ctx.by_email[old].remove(contact_id)
        if new:
            ctx.by_email.setdefault(new, []).append(contact_id)


@dataclass
class _Ctx:
    ext_owner: dict[tuple[str, str], uuid.UUID]
    by_email: dict[str, list[uuid.UUID]]
    companies: set[uuid.UUID]
    state: dict[uuid.UUID, Row]
    specs: dict[str, FieldSpec]


def raise_for(outcome: Outcome) -> None:
    """Turn a failed single-item outcome into the matching problem."""
    if outcome.status != "error":
        return
    detail = "; ".join(f"{e.field or 'body'}: {e.message}" for e in outcome.errors)
    problem: ProblemError
    if outcome.kind == "conflict":
        problem = Conflict(detail, errors=[e.as_dict() for e in outcome.errors])
    elif outcome.kind == "not_found":
        problem = NotFound("contact not found")
    elif outcome.kind == "precondition":
        problem = PreconditionFailed(detail)
    else:
        problem = ValidationFailed(outcome.errors)
    raise problem
