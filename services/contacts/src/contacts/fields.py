"""Custom field definitions per object type. Defining, changing and deleting them is
admin-only; every tenant member may read them. The key and type of a field never change
(stored values would silently become invalid); label, required and options can."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.http import check_if_match
from contacts import repository as repo
from contacts.access import Caller
from contacts.errors import FieldExists, FieldNotFound
from contacts.events import EventSink
from contacts.models import CustomFieldCreate, CustomFieldUpdate
from contacts.validation import FieldError, ValidationFailed
from contacts.writer import now

Row = dict[str, Any]
ENUMS = ("enum", "multi_enum")


def _check_options(type_: str, options: list[str]) -> None:
    if type_ in ENUMS and not options:
        raise ValidationFailed([FieldError(("options",), f"a {type_} field needs options")])
    if type_ not in ENUMS and options:
        raise ValidationFailed([FieldError(("options",), f"a {type_} field takes no options")])
    if len(set(options)) != len(options):
        raise ValidationFailed([FieldError(("options",), "options must be unique")])


class FieldService:
    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.events = EventSink(session, caller.principal, caller.origin)

    async def definitions(self, object_type: str) -> list[Row]:
        return await repo.list_definitions(self.session, self.caller.tenant, object_type)

    async def get(self, object_type: str, key: str, *, for_update: bool = False) -> Row:
        row = await repo.get_definition(
            self.session, self.caller.tenant, object_type, key, for_update=for_update
        )
        if row is None:
            raise FieldNotFound(object_type, key)
        return row

    async def define(self, object_type: str, body: CustomFieldCreate) -> Row:
        self.caller.require_admin()
        _check_options(body.type, body.options)
        if await repo.get_definition(self.session, self.caller.tenant, object_type, body.key):
            raise FieldExists(object_type, body.key)
        ts = now()
        row: Row = {
            "tenant_id": self.caller.tenant,
            "id": uuid.uuid4(),
            "object_type": object_type,
            "key": body.key,
            "label": body.label,
            "type": body.type,
            "required": body.required,
            "options": list(body.options),
            "version": 1,
            "created_at": ts,
            "updated_at": ts,
        }
        await repo.insert_definition(self.session, row)
        self.events.field_defined(row)
        return row

    async def update(
        self, object_type: str, key: str, body: CustomFieldUpdate, if_match: str | None
    ) -> Row:
        self.caller.require_admin()
        old = await self.get(object_type, key, for_update=True)
        check_if_match(if_match, old["version"])
        new = copy.deepcopy(old)
        for name in body.model_fields_set:
            value = getattr(body, name)
            if value is None:
                raise ValidationFailed([FieldError((name,), "cannot be null")])
            new[name] = list(value) if name == "options" else value
        _check_options(new["type"], new["options"])
        if new == old:
            return old
        new.update(version=old["version"] + 1, updated_at=now())
        await repo.update_definition(self.session, new)
        self.events.field_defined(new)
        return new

    async def delete(self, object_type: str, key: str, if_match: str | None) -> None:
        """Stored values stay in the records (no mass rewrite); they are no longer
        validated, and a write can clear them. The contract has no deletion event."""
        self.caller.require_admin()
        row = await self.get(object_type, key, for_update=True)
        check_if_match(if_match, row["version"])
        await repo.delete_definition(self.session, self.caller.tenant, row["id"])
