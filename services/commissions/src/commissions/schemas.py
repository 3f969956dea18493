"""API schemas. Money is a Decimal in and a decimal string out, never a float."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Money = Annotated[Decimal, Field(allow_inf_nan=False, max_digits=20, decimal_places=6)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["USD"])]
Period = Annotated[str, Field(pattern=r"^\d{4}(-(0[1-9]|1[0-2])|-Q[1-4])?$", examples=["2026-Q4"])]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TierIn(Strict):
    from_: Annotated[Decimal, Field(alias="from", ge=0, allow_inf_nan=False)]
    to: Annotated[Decimal | None, Field(gt=0, allow_inf_nan=False)] = None
    rate: Annotated[Decimal, Field(ge=0, le=10, allow_inf_nan=False)]


class SpiffIn(Strict):
    product: Annotated[str, Field(min_length=1, max_length=200)]
    amount_per_unit: Annotated[Decimal, Field(ge=0, allow_inf_nan=False, max_digits=20)]


class PlanIn(Strict):
    """A plan, or (PUT) a new effective-dated version of it."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "Account Executive 2026",
                    "period": "quarter",
                    "currency": "USD",
                    "effective_from": "2026-01-01",
                    "credit_on": "deal_won",
                    "tier_basis": "attainment",
                    "tier_mode": "graduated",
                    "tiers": [
                        {"from": "0", "to": "0.5", "rate": "0.05"},
                        {"from": "0.5", "to": "1.0", "rate": "0.10"},
                        {"from": "1.0", "to": None, "rate": "0.15"},
                    ],
                    "cap": "50000.00",
                    "spiffs": [{"product": "Onboarding", "amount_per_unit": "100.00"}],
                    "clawback_days": 90,
                }
            ]
        },
    )

    name: Annotated[str, Field(min_length=1, max_length=200)]
    period: Literal["month", "quarter", "year"]
    currency: Currency
    effective_from: date
    credit_on: Literal["deal_won", "order_paid"] = "deal_won"
    tier_basis: Literal["attainment", "amount"] = "attainment"
    tier_mode: Literal["graduated", "retroactive"] = "graduated"
    tiers: Annotated[list[TierIn], Field(max_length=50)]
    cap: Annotated[Decimal | None, Field(ge=0, allow_inf_nan=False, max_digits=20)] = None
    spiffs: Annotated[list[SpiffIn], Field(max_length=100)] = []
    clawback_days: Annotated[int, Field(ge=0, le=3660)] = 0

    def terms_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "currency": self.currency,
            "credit_on": self.credit_on,
            "tier_basis": self.tier_basis,
            "tier_mode": self.tier_mode,
            "tiers": [
                {
                    "from": str(t.from_),
                    "to": None if t.to is None else str(t.to),
                    "rate": str(t.rate),
                }
                for t in self.tiers
            ],
            "cap": None if self.cap is None else str(self.cap),
            "spiffs": [
                {"product": s.product, "amount_per_unit": str(s.amount_per_unit)}
                for s in self.spiffs
            ],
            "clawback_days": self.clawback_days,
        }


class PlanVersionOut(BaseModel):
    number: int
    effective_from: date
    name: str
    credit_on: str
    tier_basis: str
    tier_mode: str
    tiers: list[dict[str, str | None]]
    cap: str | None
    spiffs: list[dict[str, str]]
    clawback_days: int
    created_at: datetime
    created_by: str


class PlanOut(BaseModel):
    id: uuid.UUID
    name: str
    period: str
    currency: str
    latest_version: int
    versions: list[PlanVersionOut]
    version: int
    created_at: datetime
    updated_at: datetime


class AssignmentIn(Strict):
    user_id: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    team_id: uuid.UUID | None = None
    effective_from: date
    effective_to: date | None = None

    @model_validator(mode="after")
    def _one_owner(self) -> AssignmentIn:
        if (self.user_id is None) == (self.team_id is None):
            raise ValueError("give exactly one of user_id or team_id")
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError("effective_to must not be before effective_from")
        return self


class AssignmentOut(BaseModel):
    id: uuid.UUID
    plan_id: uuid.UUID
    user_id: str | None
    team_id: uuid.UUID | None
    effective_from: date
    effective_to: date | None
    created_at: datetime
    created_by: str


class QuotaIn(Strict):
    amount: Annotated[Money, Field(ge=0)]
    currency: Currency


class QuotaOut(BaseModel):
    id: str
    user_id: str | None
    team_id: str | None
    period: str
    amount: Decimal
    currency: str
    version: int
    updated_at: datetime
    updated_by: str


class StatementOut(BaseModel):
    id: uuid.UUID
    user_id: str
    period: str
    plan_id: uuid.UUID
    plan_version: int
    currency: str
    credit: Decimal
    quota: Decimal | None
    attainment: Decimal | None
    payout: Decimal
    deals_won: int
    status: str
    locked: bool
    lines: list[dict[str, Any]]
    version: int
    created_at: datetime
    updated_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    paid_by: str | None
    paid_at: datetime | None


class PeriodOut(BaseModel):
    period: str
    closed: bool
    statements: int
    closed_at: datetime | None = None
    closed_by: str | None = None


class RecomputeOut(BaseModel):
    period: str
    statements: int
    created: int
    updated: int
    unchanged: int


class AdjustmentIn(Strict):
    user_id: Annotated[str, Field(min_length=1, max_length=200)]
    period: Period
    amount: Money
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class AdjustmentOut(BaseModel):
    id: uuid.UUID
    user_id: str
    period: str
    amount: Decimal
    currency: str
    kind: str
    reason: str
    origin_period: str | None
    dispute_id: uuid.UUID | None
    created_at: datetime
    created_by: str


class DisputeIn(Strict):
    line_id: Annotated[str, Field(min_length=1, max_length=300)]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    expected_amount: Money | None = None


class DisputePatch(Strict):
    status: Literal["accepted", "rejected"]
    resolution: Annotated[str, Field(min_length=1, max_length=2000)]
    adjustment_amount: Money | None = None

    @model_validator(mode="after")
    def _amount_only_when_accepted(self) -> DisputePatch:
        if self.status == "rejected" and self.adjustment_amount is not None:
            raise ValueError("a rejected dispute books no adjustment")
        return self


class DisputeOut(BaseModel):
    id: uuid.UUID
    statement_id: uuid.UUID
    line_id: str
    user_id: str
    period: str
    reason: str
    expected_amount: Decimal | None
    status: str
    resolution: str
    adjustment_id: uuid.UUID | None
    version: int
    created_at: datetime
    created_by: str
    resolved_at: datetime | None
    resolved_by: str | None


class LeaderboardEntry(BaseModel):
    rank: int
    user_id: str
    value: Decimal | int


class EstimateOut(BaseModel):
    user_id: str
    period: str
    plan_id: uuid.UUID
    plan_version: int
    currency: str
    credit: Decimal
    payout_before: Decimal
    payout_after: Decimal
    earned: Decimal
    lines: list[dict[str, Any]]


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    details: dict[str, Any]
