"""Company operations (create, PATCH, upsert by external id, delete, reads). Companies are
written one at a time, so this path is simpler than the contact writer."""

from __future__ import annotations

import copy
import uuid
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.db import ReadPool
from chassis.http import check_if_match
from contacts import repository as repo
from contacts.access import Caller
from contacts.errors import CompanyInUse, CompanyNotFound, ExternalIdConflict
from contacts.events import EventSink
from contacts.models import CompanyIn
from contacts.service import page, parse_cursor, parse_sort, plain_read
from contacts.validation import (
    FieldError,
    ValidationFailed,
    apply_changes,
    clean_tags,
    normalize_domain,
    validate_custom_fields,
)
from contacts.writer import now

Row = dict[str, Any]
TRACKED = (
    "name",
    "domain",
    "industry",
    "employees",
    "annual_revenue",
    "annual_revenue_currency",
    "owner_id",
    "tags",
    "external_ids",
)


def company_changes(old: Row, new: Row) -> list[str]:
    changed = [f for f in TRACKED if old.get(f) != new.get(f)]
    changed = ["annual_revenue" if f == "annual_revenue_currency" else f for f in changed]
    old_cf, new_cf = old.get("custom_fields") or {}, new.get("custom_fields") or {}
    changed += [
        f"custom_fields.{k}"
        for k in sorted(set(old_cf) | set(new_cf))
        if old_cf.get(k) != new_cf.get(k)
    ]
    return list(dict.fromkeys(changed))


class CompanyService:
    def __init__(
        self, session: AsyncSession, caller: Caller, reads: ReadPool | None = None
    ) -> None:
        self.session = session
        self.caller = caller
        self.reads = reads
        self.events = EventSink(session, caller.principal, caller.origin)

    async def _visible(self, company_id: uuid.UUID, *, for_update: bool = False) -> Row:
        row = None
        if not self.caller.sees_nothing:
            row = await repo.get_company(
                self.session, self.caller.tenant, company_id, for_update=for_update
            )
        return self._shown(company_id, row)

    def _shown(self, company_id: uuid.UUID, row: Row | None) -> Row:
        if row is None or row["deleted_at"] is not None or not self.caller.can_see(row):
            raise CompanyNotFound(company_id)
        return row

    async def get(self, company_id: uuid.UUID) -> Row:
        if self.reads is None:
            return await self._visible(company_id)
        row = await plain_read(self.caller, self.reads, repo.read_company, company_id)
        return self._shown(company_id, row)

    async def search(
        self,
        q: str | None,
        tag: str | None,
        updated_after: Any,
        sort: str,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[Row], str | None]:
        order = parse_sort(sort, repo.COMPANY_SORTS)
        after = parse_cursor(cursor, order)
        if self.caller.sees_nothing:
            return [], None
        rows = await repo.list_companies(
            self.session,
            self.caller.tenant,
            self.caller.owner_scope,
            q,
            tag,
            updated_after,
            order,
            after,
            limit,
        )
        return page(rows, order, limit)

    async def _normalize(self, body: CompanyIn, *, creating: bool) -> Row:
        errors: list[FieldError] = []
        out: Row = {}
        specs = await repo.field_specs(self.session, self.caller.tenant, "company")
        for name in body.model_fields_set:
            value = getattr(body, name)
            if isinstance(value, str) and value == "":
                value = None
            if name == "domain" and value is not None:
                try:
                    value = normalize_domain(value)
                except ValueError as e:
                    errors.append(FieldError(("domain",), str(e)))
            elif name == "tags":
                value = clean_tags(value or [])
            elif name == "custom_fields":
                value, errs = validate_custom_fields(value or {}, specs, creating=False)
                errors += errs
            elif name == "external_ids":
                value = dict(value or {})
            elif name == "annual_revenue":
                out["annual_revenue_currency"] = value.currency if value else None
                value = Decimal(value.amount).quantize(Decimal("0.01")) if value else None
            out[name] = value
        if creating:
            if not out.get("name"):
                errors.append(FieldError(("name",), "is required"))
            custom = out.get("custom_fields") or {}
            errors += [
                FieldError(("custom_fields", k), "is required")
                for k, s in specs.items()
                if s.required and custom.get(k) is None
            ]
        elif "name" in out and not out["name"]:
            errors.append(FieldError(("name",), "cannot be empty"))
        if not self.caller.sees_tenant and "owner_id" in out and out["owner_id"] != self.caller.sub:
            errors.append(FieldError(("owner_id",), "a sales rep can only own records themself"))
        if errors:
            raise ValidationFailed(errors)
        return out

    async def _claim(self, company_id: uuid.UUID, old: dict[str, str], new: dict[str, str]) -> None:
        keys = list(new.items())
        holders = await repo.company_ids_by_external(self.session, self.caller.tenant, keys)
        for (system, _), holder in holders.items():
            if holder != company_id:
                raise ExternalIdConflict(
                    f"external id {system} already identifies another company",
                    errors=[{"path": ["external_ids", system], "message": "already in use"}],
                )
        removed = [(s, v) for s, v in old.items() if new.get(s) != v]
        added = [(s, v, company_id) for s, v in new.items() if (s, v) not in holders]
        await repo.remove_company_external_ids(self.session, self.caller.tenant, removed)
        await repo.add_company_external_ids(self.session, self.caller.tenant, added)

    async def create(self, body: CompanyIn, extra_external: tuple[str, str] | None = None) -> Row:
        self.caller.require_writer()
        changes = await self._normalize(body, creating=True)
        ts = now()
        row: Row = {
            "tenant_id": self.caller.tenant,
            "id": uuid.uuid4(),
            "name": changes["name"],
            "domain": changes.get("domain"),
            "industry": changes.get("industry"),
            "employees": changes.get("employees"),
            "annual_revenue": changes.get("annual_revenue"),
            "annual_revenue_currency": changes.get("annual_revenue_currency"),
            "owner_id": changes.get("owner_id"),
            "tags": changes.get("tags") or [],
            "custom_fields": {
                k: v for k, v in (changes.get("custom_fields") or {}).items() if v is not None
            },
            "external_ids": {
                k: v for k, v in (changes.get("external_ids") or {}).items() if v is not None
            },
            "created_at": ts,
            "updated_at": ts,
            "version": 1,
            "deleted_at": None,
        }
        if extra_external:
            row["external_ids"][extra_external[0]] = extra_external[1]
        if row["owner_id"] is None and not self.caller.sees_tenant:
            row["owner_id"] = self.caller.sub
        await repo.insert_company(self.session, row)
        await self._claim(row["id"], {}, row["external_ids"])
        self.events.company_created(row)
        return row

    async def _apply(self, old: Row, changes: Row) -> Row:
        new = copy.deepcopy(old)
        apply_changes(new, old, changes)
        changed = company_changes(old, new)
        if not changed:
            return old
        await self._claim(old["id"], old.get("external_ids") or {}, new["external_ids"])
        new.update(version=old["version"] + 1, updated_at=now())
        await repo.update_company(self.session, new)
        self.events.company_updated(new, changed)
        return new

    async def update(self, company_id: uuid.UUID, body: CompanyIn, if_match: str | None) -> Row:
        self.caller.require_writer()
        old = await self._visible(company_id, for_update=True)
        check_if_match(if_match, old["version"])
        return await self._apply(old, await self._normalize(body, creating=False))

    async def upsert_by_external_id(
        self, system: str, external_id: str, body: CompanyIn, if_match: str | None
    ) -> tuple[Row, bool]:
        self.caller.require_writer()
        sent = (body.external_ids or {}).get(system)
        if sent is not None and sent != external_id:
            raise ValidationFailed(
                [FieldError(("external_ids", system), "differs from the external id in the path")]
            )
        keys = [
            (system, external_id),
            *((s, v) for s, v in (body.external_ids or {}).items() if v is not None),
        ]
        holders = set(
            (await repo.company_ids_by_external(self.session, self.caller.tenant, keys)).values()
        )
        if len(holders) > 1:
            raise ExternalIdConflict("the external ids belong to different companies")
        if not holders:
            return await self.create(body, extra_external=(system, external_id)), True
        old = await self._visible(holders.pop(), for_update=True)
        if if_match is not None:
            check_if_match(if_match, old["version"])
        changes = await self._normalize(body, creating=False)
        changes.setdefault("external_ids", {})[system] = external_id
        return await self._apply(old, changes), False

    async def delete(self, company_id: uuid.UUID, if_match: str | None) -> None:
        self.caller.require_writer()
        row = await self._visible(company_id, for_update=True)
        check_if_match(if_match, row["version"])
        contacts = await repo.count_live_contacts_of_company(
            self.session, self.caller.tenant, company_id
        )
        if contacts:
            raise CompanyInUse(company_id, contacts)
        ts = now()
        row.update(deleted_at=ts, updated_at=ts, version=row["version"] + 1)
        await repo.update_company(self.session, row)
        await repo.remove_external_ids_of_company(self.session, self.caller.tenant, company_id)
        self.events.company_deleted(row)
