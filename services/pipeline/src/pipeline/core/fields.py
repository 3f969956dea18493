"""Custom fields of deals: validated against the local replica of the contacts service's
definitions (`custom_field_definitions`, fed by crm.contacts.custom_field.defined.v1), with
the same type rules as contacts (text, number, decimal, date, bool, enum, multi_enum, email,
url)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from sqlmodel.ext.asyncio.session import AsyncSession

from pipeline.core.common import FieldError, execute, fetch


@dataclass(frozen=True)
class FieldSpec:
    key: str
    type: str
    required: bool = False
    options: tuple[str, ...] = ()


_DECIMAL = re.compile(r"^-?\d{1,28}(\.\d{1,10})?$")
# Syntax only (contacts normalizes with email-validator; this service keeps to a plain check).
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def validate_value(spec: FieldSpec, value: Any) -> Any:
    """The normalized JSON value of one custom field, or ValueError saying what is expected."""
    t = spec.type
    if t == "text":
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if len(value) > 10_000:
            raise ValueError("must be at most 10000 characters")
        return value
    if t == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise ValueError("must be a finite number")
        return value
    if t == "decimal":
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError('must be a decimal string such as "12.50"')
        text = str(value).strip()
        if not _DECIMAL.match(text):
            raise ValueError('must be a decimal string such as "12.50"')
        try:
            return str(Decimal(text))
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            raise ValueError('must be a decimal string such as "12.50"') from None
    if t == "date":
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError("must be a date YYYY-MM-DD")
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError("must be a date YYYY-MM-DD") from None
    if t == "bool":
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if t == "enum":
        if not isinstance(value, str) or value not in spec.options:
            raise ValueError(f"must be one of: {', '.join(spec.options)}")
        return value
    if t == "multi_enum":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        bad = [v for v in value if v not in spec.options]
        if bad:
            raise ValueError(f"{bad[0]!r} is not one of: {', '.join(spec.options)}")
        return list(dict.fromkeys(value))
    if t == "email":
        if not isinstance(value, str) or not _EMAIL.match(value.strip()):
            raise ValueError("must be an email address")
        return value.strip().lower()
    if t == "url":
        if not isinstance(value, str):
            raise ValueError("must be an http(s) URL")
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        return value.strip()
    raise ValueError(f"unsupported field type {t!r}")


def validate_custom_fields(
    values: Mapping[str, Any], specs: Mapping[str, FieldSpec]
) -> tuple[dict[str, Any], list[FieldError]]:
    """Normalized values of one write (None = remove the key) and the errors. Required
    fields are checked on the resulting record (`missing_required`), not here."""
    out: dict[str, Any] = {}
    errors: list[FieldError] = []
    for key, value in values.items():
        spec = specs.get(key)
        if spec is None and value is None:
            out[key] = None  # clearing a value whose definition is gone
            continue
        if spec is None:
            errors.append(
                FieldError(("custom_fields", key), "no custom field with this key is defined")
            )
            continue
        if value is None or value == "" or value == []:
            if spec.required:
                errors.append(FieldError(("custom_fields", key), "is required"))
            else:
                out[key] = None
            continue
        try:
            out[key] = validate_value(spec, value)
        except ValueError as e:
            errors.append(FieldError(("custom_fields", key), str(e)))
    return out, errors


def missing_required(values: Mapping[str, Any], specs: Mapping[str, FieldSpec]) -> list[FieldError]:
    return [
        FieldError(("custom_fields", k), "is required")
        for k, s in specs.items()
        if s.required and values.get(k) is None
    ]


async def field_specs(session: AsyncSession, tenant: str, object_type: str) -> dict[str, FieldSpec]:
    rows = await fetch(
        session,
        "SELECT key, type, required, options FROM custom_field_definitions "
        "WHERE tenant_id = $1 AND object_type = $2 AND NOT deleted",
        tenant,
        object_type,
    )
    return {
        r["key"]: FieldSpec(r["key"], r["type"], r["required"], tuple(r["options"])) for r in rows
    }


async def upsert_definition(
    session: AsyncSession,
    tenant: str,
    object_type: str,
    key: str,
    label: str,
    type_: str,
    required: bool,
    options: list[str],
    version: int,
) -> None:
    """Replica write. A definition deleted and defined again in contacts gets a new id and
    starts over at version 1, so the row is replaced whatever its version (the consumer
    already applies each definition's events in version order)."""
    await execute(
        session,
        "INSERT INTO custom_field_definitions "
        "(tenant_id, object_type, key, label, type, required, options, version, deleted) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false) "
        "ON CONFLICT (tenant_id, object_type, key) DO UPDATE SET label = EXCLUDED.label, "
        "type = EXCLUDED.type, required = EXCLUDED.required, options = EXCLUDED.options, "
        "version = EXCLUDED.version, deleted = false",
        tenant,
        object_type,
        key,
        label,
        type_,
        required,
        options,
        version,
    )
