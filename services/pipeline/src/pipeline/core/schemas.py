"""API schemas of the core: what clients send (`*In`) and get back (`*Public`). Money and
other decimals travel as strings; they are parsed by `pipeline.money`, which names the
failing field path."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

ForecastCategory = Literal["pipeline", "best_case", "commit", "omitted", "closed"]
MemberRole = Literal["rep", "manager"]
DealStatus = Literal["open", "won", "lost"]
OrderStatus = Literal["open", "paid", "refunded", "cancelled"]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)]
UserId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
SystemName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,62}$")]
ExternalId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


def _int_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# Decimal values arrive as strings ("9000.00"); integers are tolerated, floats never (a float
# has already lost the cents). `pipeline.money` parses the text.
DecimalText = Annotated[str, BeforeValidator(_int_as_text), Field(examples=["9000.00"])]

_STRICT = ConfigDict(extra="forbid")


# --- teams ------------------------------------------------------------------------------------


class MemberIn(BaseModel):
    model_config = _STRICT

    user_id: UserId
    role: MemberRole = "rep"


class TeamIn(BaseModel):
    """A team write. On PATCH only the fields sent change; `members` replaces the list."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "East",
                    "parent_id": None,
                    "members": [
                        {"user_id": "u-rep1", "role": "rep"},
                        {"user_id": "u-mgr", "role": "manager"},
                    ],
                }
            ]
        },
    )

    name: Name | None = None
    parent_id: uuid.UUID | None = None
    members: list[MemberIn] | None = Field(default=None, max_length=1000)


class MemberRoleIn(BaseModel):
    model_config = _STRICT

    role: MemberRole


class MemberPublic(BaseModel):
    user_id: str
    role: MemberRole


class TeamPublic(BaseModel):
    id: uuid.UUID
    name: str
    parent_id: uuid.UUID | None = None
    members: list[MemberPublic]
    created_at: datetime
    updated_at: datetime
    version: int


# --- pipelines --------------------------------------------------------------------------------


class StageIn(BaseModel):
    model_config = _STRICT

    id: uuid.UUID | None = Field(
        default=None, description="on PATCH: an existing stage to keep; omit for a new stage"
    )
    name: Name
    probability: int = Field(ge=0, le=100)
    forecast_category: ForecastCategory
    is_won: bool = False
    is_lost: bool = False


class PipelineIn(BaseModel):
    """A pipeline write. On PATCH `stages` replaces the list: a stage with an id keeps it,
    one without is new, a stage left out is removed (409 while deals are in it)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "New business",
                    "stages": [
                        {"name": "Qualify", "probability": 10, "forecast_category": "pipeline"},
                        {"name": "Negotiation", "probability": 70, "forecast_category": "commit"},
                        {
                            "name": "Won",
                            "probability": 100,
                            "forecast_category": "closed",
                            "is_won": True,
                        },
                        {
                            "name": "Lost",
                            "probability": 0,
                            "forecast_category": "omitted",
                            "is_lost": True,
                        },
                    ],
                }
            ]
        },
    )

    name: Name | None = None
    stages: list[StageIn] | None = Field(default=None, max_length=100)


class StagePublic(BaseModel):
    id: uuid.UUID
    name: str
    position: int
    probability: int
    forecast_category: ForecastCategory
    is_won: bool
    is_lost: bool


class PipelinePublic(BaseModel):
    id: uuid.UUID
    name: str
    stages: list[StagePublic]
    created_at: datetime
    updated_at: datetime
    version: int


# --- deals ------------------------------------------------------------------------------------


class LineItemIn(BaseModel):
    model_config = _STRICT

    product: Name
    quantity: DecimalText = "1"
    unit_price: DecimalText
    discount_percent: DecimalText = "0"


class SplitIn(BaseModel):
    model_config = _STRICT

    user_id: UserId
    percent: DecimalText


class DealIn(BaseModel):
    """A deal write. On PATCH and upsert only the fields sent change: `null` clears a field,
    `custom_fields` and `external_ids` are merged key by key (a `null` value removes the key),
    `line_items` and `splits` are replaced. `status`, `lost_reason` and `closed_at` change
    only through /won, /lost and /reopen."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Acme renewal",
                    "owner_id": "u-rep1",
                    "pipeline_id": "6f1c2b1e-8f0a-4d0e-9a43-1f0d0b0e9b7a",
                    "stage_id": "0b5e3f3c-7b8e-4c86-9a43-1f0d0b0e9b7a",
                    "amount": "10000.00",
                    "currency": "USD",
                    "expected_close_date": "2027-02-15",
                    "forecast_category": "best_case",
                    "splits": [
                        {"user_id": "u-rep1", "percent": "60"},
                        {"user_id": "u-rep2", "percent": "40"},
                    ],
                }
            ]
        },
    )

    name: Name | None = None
    contact_id: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    owner_id: UserId | None = None
    pipeline_id: uuid.UUID | None = None
    stage_id: uuid.UUID | None = None
    amount: DecimalText | None = None
    currency: str | None = Field(default=None, examples=["USD"])
    expected_close_date: date | None = None
    forecast_category: ForecastCategory | None = Field(
        default=None, description="override of the stage's default; null = the stage's"
    )
    line_items: list[LineItemIn] | None = Field(default=None, max_length=500)
    splits: list[SplitIn] | None = Field(default=None, max_length=50)
    custom_fields: dict[str, Any] | None = None
    external_ids: dict[SystemName, ExternalId | None] | None = None


class DealBatchItem(DealIn):
    """A batch item: `id` updates that deal; else external ids match an existing deal; else
    a deal is created."""

    id: uuid.UUID | None = None


class WonIn(BaseModel):
    model_config = _STRICT

    closed_at: datetime | None = Field(
        default=None, description="when the deal closed; defaults to now, never in the future"
    )


class LostIn(WonIn):
    lost_reason: ShortText | None = Field(default=None, examples=["price"])


class ReopenIn(BaseModel):
    model_config = _STRICT

    stage_id: uuid.UUID | None = Field(
        default=None, description="open stage to reopen into; defaults to the stage before closing"
    )


class LineItemPublic(BaseModel):
    product: str
    quantity: str
    unit_price: str
    discount_percent: str
    amount: str


class SplitPublic(BaseModel):
    user_id: str
    percent: str


class DealPublic(BaseModel):
    id: uuid.UUID
    name: str
    contact_id: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    owner_id: str
    pipeline_id: uuid.UUID
    stage_id: uuid.UUID
    stage_name: str
    amount: str = Field(examples=["10000.00"])
    currency: str
    expected_close_date: date | None = None
    forecast_category: ForecastCategory | None = Field(
        default=None, description="the deal's override; null when the stage's default applies"
    )
    effective_forecast_category: ForecastCategory
    line_items: list[LineItemPublic]
    splits: list[SplitPublic]
    custom_fields: dict[str, Any]
    external_ids: dict[str, str]
    status: DealStatus
    lost_reason: str | None = None
    closed_at: datetime | None = None
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime
    version: int


class StageHistoryPublic(BaseModel):
    stage_id: uuid.UUID
    from_stage_id: uuid.UUID | None = None
    to_stage_id: uuid.UUID | None = None
    entered_at: datetime
    entered_by: str | None = None
    left_at: datetime | None = None
    amount: str
    currency: str


# --- orders -----------------------------------------------------------------------------------


class OrderLineIn(BaseModel):
    model_config = _STRICT

    product: Name
    quantity: DecimalText = "1"
    unit_price: DecimalText
    amount: DecimalText | None = Field(
        default=None, description="line amount; defaults to quantity x unit_price"
    )


class OrderIn(BaseModel):
    """An order write (upsert): only the fields sent change; `lines` is replaced."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "contact_id": "0b5e3f3c-7b8e-4c86-9a43-1f0d0b0e9b7a",
                    "number": "SO-10042",
                    "ordered_at": "2026-11-20T10:00:00Z",
                    "amount": "1200.00",
                    "currency": "EUR",
                    "status": "paid",
                    "paid_at": "2026-11-21T08:00:00Z",
                    "lines": [{"product": "Widget", "quantity": "2", "unit_price": "600.00"}],
                }
            ]
        },
    )

    contact_id: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    deal_id: uuid.UUID | None = None
    number: ShortText | None = None
    ordered_at: datetime | None = None
    amount: DecimalText | None = None
    currency: str | None = None
    status: OrderStatus | None = None
    paid_at: datetime | None = None
    refunded_at: datetime | None = None
    lines: list[OrderLineIn] | None = Field(default=None, max_length=1000)
    external_ids: dict[SystemName, ExternalId | None] | None = None


class OrderBatchItem(OrderIn):
    id: uuid.UUID | None = None


class OrderLinePublic(BaseModel):
    product: str
    quantity: str
    unit_price: str
    amount: str


class OrderPublic(BaseModel):
    id: uuid.UUID
    contact_id: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    deal_id: uuid.UUID | None = None
    owner_id: str | None = Field(default=None, description="owner of the linked deal")
    number: str | None = None
    ordered_at: datetime
    amount: str
    currency: str
    status: OrderStatus
    paid_at: datetime | None = None
    refunded_at: datetime | None = None
    lines: list[OrderLinePublic]
    external_ids: dict[str, str]
    created_at: datetime
    updated_at: datetime
    version: int


# --- batches ----------------------------------------------------------------------------------


class BatchIn(BaseModel):
    """Up to `batch_max_items` items (1000 by default), applied in one transaction; an
    invalid item is reported and the others are applied."""

    model_config = _STRICT

    items: list[dict[str, Any]] = Field(min_length=1)


class BatchItemResult(BaseModel):
    index: int
    status: Literal["created", "updated", "error"]
    id: uuid.UUID | None = None
    version: int | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)


class BatchOut(BaseModel):
    items: list[BatchItemResult]
