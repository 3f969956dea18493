"""Ticket custom fields, validated against the local replica of the contacts service's
definitions with object_type "ticket" (kept by handlers.py from
crm.contacts.custom_field.defined.v1)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.problems import Unprocessable

_DECIMAL = re.compile(r"^-?\d{1,28}(\.\d{1,10})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class FieldSpec:
    key: str
    type: str
    required: bool = False
    options: tuple[str, ...] = ()


async def ticket_fields(session: AsyncSession, tenant: str) -> dict[str, FieldSpec]:
    rows = await session.execute(
        text(
            "SELECT key, type, required, options FROM custom_field_definitions "
            "WHERE tenant_id = :t AND object_type = 'ticket' AND NOT deleted"
        ),
        {"t": tenant},
    )
    return {r.key: FieldSpec(r.key, r.type, r.required, tuple(r.options)) for r in rows}


def validate_value(spec: FieldSpec, value: Any) -> Any:
    """The normalized JSON value of one custom field, or ValueError saying what is expected."""
    t = spec.type
    if t in ("text", "string"):
        if not isinstance(value, str) or len(value) > 10_000:
            raise ValueError("must be a string of at most 10000 characters")
        return value
    if t == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ValueError("must be a finite number")
        return value
    if t == "decimal":
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError('must be a decimal string such as "12.50"')
        raw = str(value).strip()
        try:
            if not _DECIMAL.match(raw):
                raise InvalidOperation
            return str(Decimal(raw))
        except InvalidOperation:
            raise ValueError('must be a decimal string such as "12.50"') from None
    if t == "date":
        try:
            if not isinstance(value, str) or len(value) != 10:
                raise ValueError(value)
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError("must be a date YYYY-MM-DD") from None
    if t in ("bool", "boolean"):
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if t == "enum":
        if not isinstance(value, str) or value not in spec.options:
            raise ValueError(f"must be one of: {', '.join(spec.options)}")
        return value
    if t == "multi_enum":
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v in spec.options for v in value
        ):
            raise ValueError(f"must be a list of: {', '.join(spec.options)}")
        return list(dict.fromkeys(value))
    if t == "email":
        if not isinstance(value, str) or not _EMAIL.match(value.strip()):
            raise ValueError("must be an email address")
        return value.strip().lower()
    if t == "url":
        parts = urlsplit(value.strip()) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        return value.strip()
    raise ValueError(f"unsupported field type {t!r}")


def validate_custom_fields(
    values: Mapping[str, Any],
    specs: Mapping[str, FieldSpec],
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The merged custom fields after a write (None removes a key); 422 naming every failing
    `custom_fields.<key>`. Required fields are enforced on create only (`current` None)."""
    out = dict(current or {})
    errors: list[dict[str, Any]] = []
    for key, value in values.items():
        spec = specs.get(key)
        path = ["custom_fields", key]
        if spec is None:
            if value is None:
                out.pop(key, None)
            else:
                errors.append({"path": path, "message": "no custom field with this key is defined"})
            continue
        if value is None or value == "" or value == []:
            if spec.required:
                errors.append({"path": path, "message": "is required"})
            out.pop(key, None)
            continue
        try:
            out[key] = validate_value(spec, value)
        except ValueError as e:
            errors.append({"path": path, "message": str(e)})
    if current is None:
        for key, spec in specs.items():
            if spec.required and key not in values:
                errors.append({"path": ["custom_fields", key], "message": "is required"})
    if errors:
        raise Unprocessable(
            "; ".join(f"{'.'.join(e['path'])}: {e['message']}" for e in errors), errors=errors
        )
    return out
