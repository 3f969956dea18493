"""Pure normalization and validation: emails, phones, domains, custom field values.

Nothing here touches the database; errors are collected as `FieldError`s naming the field
path (e.g. `custom_fields.size`) so one write can report every problem at once."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError

from chassis.problems import Unprocessable

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class FieldError:
    path: Path
    message: str

    @property
    def field(self) -> str:
        return ".".join(str(p) for p in self.path)

    def as_dict(self) -> dict[str, Any]:
        return {"path": list(self.path), "message": self.message}


class ValidationFailed(Unprocessable):
    """422 listing every failing field path."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        errs = list(errors)
        super().__init__(
            "; ".join(f"{e.field or 'body'}: {e.message}" for e in errs),
            errors=[e.as_dict() for e in errs],
        )
        self.field_errors = errs


def pydantic_errors(exc: ValidationError, prefix: Path = ()) -> list[FieldError]:
    return [FieldError((*prefix, *e["loc"]), e["msg"]) for e in exc.errors()]


def normalize_email(raw: str) -> str:
    """Syntax-checked (no DNS lookup), lower-cased so matching ignores case."""
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as e:
        raise ValueError(str(e)) from None
    return result.normalized.lower()


def normalize_phone(raw: str, region: str) -> str:
    """E.164, parsing numbers without a `+` country code in `region` (e.g. "US")."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as e:
        raise ValueError(f"not a phone number: {e}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number (give it in international form, e.g. +1...)")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def normalize_domain(raw: str) -> str:
    """`https://www.Example.com/about` -> `example.com`."""
    value = raw.strip().lower()
    if "://" in value:
        value = urlsplit(value).hostname or ""
    value = value.split("/", 1)[0].removeprefix("www.").rstrip(".")
    if not _DOMAIN.match(value):
        raise ValueError("not a domain name, e.g. example.com")
    return value


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Stripped, de-duplicated (first occurrence wins, case preserved)."""
    seen: set[str] = set()
    out: list[str] = []
    for t in tags:
        t = t.strip()
        if t and t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


@dataclass(frozen=True)
class FieldSpec:
    """A custom field definition, as far as validation needs it."""

    key: str
    type: str
    required: bool = False
    options: tuple[str, ...] = ()


_DECIMAL = re.compile(r"^-?\d{1,28}(\.\d{1,10})?$")


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
        if isinstance(value, float) and value != value:  # NaN
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
        except InvalidOperation:
            raise ValueError('must be a decimal string such as "12.50"') from None
    if t == "date":
        if not isinstance(value, str):
            raise ValueError("must be a date YYYY-MM-DD")
        try:
            if len(value) != 10:
                raise ValueError(value)
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
        if not isinstance(value, str):
            raise ValueError("must be an email address")
        return normalize_email(value)
    if t == "url":
        if not isinstance(value, str):
            raise ValueError("must be an http(s) URL")
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        return value.strip()
    raise ValueError(f"unsupported field type {t!r}")


def validate_custom_fields(
    values: Mapping[str, Any],
    specs: Mapping[str, FieldSpec],
    *,
    creating: bool,
    prefix: str = "custom_fields",
) -> tuple[dict[str, Any], list[FieldError]]:
    """Validate the custom field values of one write.

    Returns the normalized values (a `None` value means: remove the key) and the errors.
    Required fields are enforced when creating; afterwards a write may not clear them
    (so adding a required field later does not block unrelated updates of old records)."""
    out: dict[str, Any] = {}
    errors: list[FieldError] = []
    for key, value in values.items():
        spec = specs.get(key)
        if spec is None and value is None:
            out[key] = None  # clearing a value whose definition was deleted
            continue
        if spec is None:
            errors.append(FieldError((prefix, key), "no custom field with this key is defined"))
            continue
        if value is None or value == "" or value == []:
            if spec.required:
                errors.append(FieldError((prefix, key), "is required"))
            else:
                out[key] = None
            continue
        try:
            out[key] = validate_value(spec, value)
        except ValueError as e:
            errors.append(FieldError((prefix, key), str(e)))
    if creating:
        for key, spec in specs.items():
            if spec.required and key not in values:
                errors.append(FieldError((prefix, key), "is required"))
    return out, errors


def coerce_filter_value(spec: FieldSpec, raw: str) -> Any:
    """A `cf.<key>=<value>` query value as the JSON value stored for that field."""
    if spec.type == "number":
        try:
            number = float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
        return int(number) if number.is_integer() else number
    if spec.type == "bool":
        if raw.lower() not in ("true", "false"):
            raise ValueError("must be true or false")
        return raw.lower() == "true"
    if spec.type == "multi_enum":
        return [validate_value(FieldSpec(spec.key, "enum", options=spec.options), raw)]
    return validate_value(spec, raw)


MAP_FIELDS = ("custom_fields", "external_ids")


def apply_changes(new: dict[str, Any], old: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
    """Write `changes` into `new` (a copy of `old`). Map fields are merge-patched: a key set
    to null is removed, other keys are set, keys not sent are kept."""
    for name, value in changes.items():
        if name in MAP_FIELDS:
            merged = dict(old.get(name) or {})
            for k, v in value.items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
            new[name] = merged
        else:
            new[name] = value
