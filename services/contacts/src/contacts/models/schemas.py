"""API schemas: what clients send (`*In`, all fields optional so one model serves create,
PATCH and upsert; PATCH applies only the fields sent) and what they get back (`*Public`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

LifecycleStage = Literal[
    "subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist", "other"
]
ObjectType = Literal["contact", "company", "deal", "ticket"]
FieldType = Literal[
    "text", "number", "decimal", "date", "bool", "enum", "multi_enum", "email", "url"
]
ConsentStatus = Literal["granted", "denied", "unknown"]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
SystemName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,62}$")]
ExternalId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)]
FieldKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]

_STRICT = ConfigDict(extra="forbid")


class ConsentIn(BaseModel):
    model_config = _STRICT

    email_marketing: ConsentStatus = "unknown"
    legal_basis: ShortText | None = Field(default=None, examples=["consent"])
    updated_at: datetime | None = Field(
        default=None, description="when the person answered; defaults to the time of the write"
    )


class ContactIn(BaseModel):
    """A contact write. On PATCH and upsert only the fields sent change: `null` clears a field,
    `custom_fields` and `external_ids` are merged key by key (a `null` value removes the key),
    `tags` are replaced."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "email": "ada@example.com",
                    "phone": "+44 20 7946 0958",
                    "lifecycle_stage": "lead",
                    "tags": ["vip"],
                    "custom_fields": {"size": 42},
                    "external_ids": {"sap": "0000123"},
                    "consent": {"email_marketing": "granted", "legal_basis": "consent"},
                }
            ]
        },
    )

    first_name: ShortText | None = None
    last_name: ShortText | None = None
    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=320)] | None = None
    phone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=50)] | None = None
    company_id: uuid.UUID | None = None
    owner_id: ShortText | None = None
    lifecycle_stage: LifecycleStage | None = None
    lead_source: ShortText | None = Field(default=None, examples=["web_form"])
    tags: list[Tag] | None = Field(default=None, max_length=100)
    custom_fields: dict[str, Any] | None = None
    external_ids: dict[SystemName, ExternalId | None] | None = None
    consent: ConsentIn | None = None


class ConsentPublic(BaseModel):
    email_marketing: ConsentStatus
    legal_basis: str | None = None
    updated_at: datetime | None = None


class ContactPublic(BaseModel):
    id: uuid.UUID
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    company_id: uuid.UUID | None = None
    owner_id: str | None = None
    lifecycle_stage: str | None = None
    lead_source: str | None = None
    tags: list[str] = Field(default_factory=list)
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    external_ids: dict[str, str] = Field(default_factory=dict)
    consent: ConsentPublic | None = None
    created_at: datetime
    updated_at: datetime
    version: int
    merged_into_id: uuid.UUID | None = None
    erased_at: datetime | None = None


class MoneyIn(BaseModel):
    """Money as a decimal string and an ISO 4217 currency code; never a float."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount": "1250000.00", "currency": "EUR"}]},
    )

    amount: Annotated[str, StringConstraints(pattern=r"^-?\d{1,18}(\.\d{1,2})?$")]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class CompanyIn(BaseModel):
    """A company write; PATCH and upsert change only the fields sent (see ContactIn)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Analytical Engines Ltd",
                    "domain": "engines.example",
                    "industry": "software",
                    "employees": 120,
                    "annual_revenue": {"amount": "1250000.00", "currency": "GBP"},
                }
            ]
        },
    )

    name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
        | None
    ) = None
    domain: ShortText | None = None
    industry: ShortText | None = None
    employees: int | None = Field(default=None, ge=0)
    annual_revenue: MoneyIn | None = None
    owner_id: ShortText | None = None
    tags: list[Tag] | None = Field(default=None, max_length=100)
    custom_fields: dict[str, Any] | None = None
    external_ids: dict[SystemName, ExternalId | None] | None = None


class CompanyPublic(BaseModel):
    id: uuid.UUID
    name: str
    domain: str | None = None
    industry: str | None = None
    employees: int | None = None
    annual_revenue: MoneyIn | None = None
    owner_id: str | None = None
    tags: list[str] = Field(default_factory=list)
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    external_ids: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    version: int


class BatchIn(BaseModel):
    """Up to 1000 contacts, upserted by external id, else by email. Items are validated one by
    one (an invalid item is reported, the others are applied)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "email": "ada@example.com",
                            "external_ids": {"sap": "0000123"},
                            "last_name": "Lovelace",
                        },
                    ]
                }
            ]
        },
    )

    items: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class BatchItemResult(BaseModel):
    index: int
    status: Literal["created", "updated", "error"]
    id: uuid.UUID | None = None
    version: int | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)


class BatchOut(BaseModel):
    items: list[BatchItemResult]


class MergeIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"duplicate_ids": ["0b5e3f3c-7b8e-4c86-9a43-1f0d0b0e9b7a"]}]
        },
    )

    duplicate_ids: list[uuid.UUID] = Field(min_length=1, max_length=10)


class DuplicateCandidate(BaseModel):
    contact: ContactPublic
    score: float = Field(ge=0, le=1)
    reasons: list[str] = Field(examples=[["email", "name"]])


class DuplicatesOut(BaseModel):
    items: list[DuplicateCandidate]


class CustomFieldCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "key": "size",
                    "label": "Company size",
                    "type": "enum",
                    "required": False,
                    "options": ["small", "medium", "large"],
                }
            ]
        },
    )

    key: FieldKey
    label: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
    type: FieldType
    required: bool = False
    options: list[Tag] = Field(default_factory=list, max_length=500)


class CustomFieldUpdate(BaseModel):
    """The type and key of a field cannot change; label, required and options can."""

    model_config = _STRICT

    label: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
        | None
    ) = None
    required: bool | None = None
    options: list[Tag] | None = Field(default=None, max_length=500)


class CustomFieldPublic(BaseModel):
    id: uuid.UUID
    object_type: ObjectType
    key: str
    label: str
    type: FieldType
    required: bool
    options: list[str]
    version: int
    created_at: datetime
    updated_at: datetime


class ImportErrorOut(BaseModel):
    row: int = Field(description="1-based row of the file; the header is row 1")
    field: str | None = Field(default=None, examples=["custom_fields.size"])
    message: str


class ImportJobPublic(BaseModel):
    id: uuid.UUID
    status: Literal["queued", "running", "completed", "failed"]
    filename: str
    total: int | None = None
    processed: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0
    error: str | None = None
    errors: list[ImportErrorOut] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
