"""API schemas of forecasting and reports. Amounts and ratios are decimal strings."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_CURRENCY = re.compile(r"^[A-Z]{3}$")


class GroupBy(StrEnum):
    owner = "owner"
    team = "team"


class WinRateGroupBy(StrEnum):
    owner = "owner"
    team = "team"
    pipeline = "pipeline"


class AdjustableCategory(StrEnum):
    commit = "commit"
    best_case = "best_case"
    pipeline = "pipeline"


# --- forecast --------------------------------------------------------------------------------


class AdjustmentNote(BaseModel):
    category: AdjustableCategory
    amount: str
    note: str
    by: str
    updated_at: datetime


class Adjusted(BaseModel):
    """The group's figures after its manager adjustments (the raw figures stay beside it)."""

    commit: str
    best_case: str
    pipeline: str
    commit_forecast: str
    best_case_forecast: str
    gap: str | None
    adjustments: list[AdjustmentNote]


class ForecastRow(BaseModel):
    currency: str
    closed_won: str
    commit: str
    best_case: str
    pipeline: str
    commit_forecast: str
    best_case_forecast: str
    weighted: str
    historical: str
    quota: str | None
    gap: str | None
    deal_count: int


class ForecastGroup(ForecastRow):
    key: str
    name: str | None = None
    adjusted: Adjusted | None = None


class ForecastOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "period": "2027-Q1",
                    "group_by": "owner",
                    "team_id": None,
                    "as_of": "2027-01-10T09:00:00Z",
                    "groups": [
                        {
                            "key": "u-rep1",
                            "currency": "USD",
                            "closed_won": "5000.00",
                            "commit": "10000.00",
                            "best_case": "2000.00",
                            "pipeline": "8000.00",
                            "commit_forecast": "15000.00",
                            "best_case_forecast": "17000.00",
                            "weighted": "9400.00",
                            "historical": "8100.00",
                            "quota": None,
                            "gap": None,
                            "deal_count": 4,
                        }
                    ],
                    "total": [],
                }
            ]
        }
    )

    period: str
    group_by: GroupBy
    team_id: str | None
    as_of: datetime
    groups: list[ForecastGroup]
    total: list[ForecastRow]


class SnapshotIn(BaseModel):
    period: str = Field(examples=["2026-Q4"])
    group_by: GroupBy = GroupBy.owner
    team_id: uuid.UUID | None = None


class SnapshotOut(BaseModel):
    id: uuid.UUID
    period: str
    group_by: GroupBy
    team_id: uuid.UUID | None
    taken_by: str
    taken_at: datetime
    forecast: dict[str, Any]


class AccuracyFigure(BaseModel):
    forecast: str
    error: str = Field(description="forecast - actual")
    error_percent: str | None = Field(description="error / actual x 100; null when actual is 0")


class AccuracyRow(BaseModel):
    key: str | None = None
    currency: str
    actual: str
    commit_forecast: AccuracyFigure
    best_case_forecast: AccuracyFigure
    weighted: AccuracyFigure


class SnapshotAccuracy(BaseModel):
    snapshot_id: uuid.UUID
    taken_at: datetime
    taken_by: str
    group_by: GroupBy
    team_id: uuid.UUID | None
    groups: list[AccuracyRow]
    total: list[AccuracyRow]


class AccuracyOut(BaseModel):
    period: str
    as_of: datetime
    snapshots: list[SnapshotAccuracy]


class AdjustmentIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "period": "2026-Q4",
                    "user_id": "u-rep1",
                    "category": "commit",
                    "currency": "USD",
                    "amount": "12000.00",
                    "note": "Acme slips to January",
                }
            ]
        },
    )

    period: str
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    team_id: uuid.UUID | None = None
    category: AdjustableCategory
    currency: str
    amount: str
    note: str = Field(default="", max_length=2000)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if not _CURRENCY.match(v):
            raise ValueError("must be an ISO 4217 code in upper case, e.g. USD")
        return v

    @field_validator("amount")
    @classmethod
    def _amount(cls, v: str) -> str:
        try:
            d = Decimal(v)
        except InvalidOperation as e:
            raise ValueError("must be a decimal string, e.g. 1200.50") from e
        if not d.is_finite() or d < 0:
            raise ValueError("must be a non-negative decimal")
        if d.as_tuple().exponent < -4 or d.adjusted() >= 15:  # type: ignore[operator]
            raise ValueError("must have at most 15 integer digits and 4 decimals")
        return v

    @model_validator(mode="after")
    def _subject(self) -> AdjustmentIn:
        if (self.user_id is None) == (self.team_id is None):
            raise ValueError("give exactly one of user_id and team_id")
        return self


class AdjustmentOut(BaseModel):
    id: uuid.UUID
    period: str
    user_id: str | None
    team_id: str | None
    category: AdjustableCategory
    currency: str
    amount: str
    note: str
    adjusted_by: str
    created_at: datetime
    updated_at: datetime
    version: int


# --- reports ---------------------------------------------------------------------------------


class FunnelStage(BaseModel):
    stage_id: uuid.UUID
    name: str
    position: int
    is_won: bool
    is_lost: bool
    entered: int
    advanced: int
    won: int
    lost: int
    conversion_to_next: str | None
    conversion_to_won: str | None
    median_days_in_stage: str | None


class FunnelOut(BaseModel):
    pipeline_id: uuid.UUID
    from_: date = Field(alias="from")
    to: date
    stages: list[FunnelStage]

    model_config = ConfigDict(populate_by_name=True)


class SalesCycleRow(BaseModel):
    owner_id: str | None = None
    won_count: int
    median_days: str | None
    mean_days: str | None


class SalesCycleOut(BaseModel):
    from_: date = Field(alias="from")
    to: date
    groups: list[SalesCycleRow]
    total: SalesCycleRow

    model_config = ConfigDict(populate_by_name=True)


class WinRateRow(BaseModel):
    key: str | None = None
    name: str | None = None
    won: int
    lost: int
    win_rate: str | None


class WinRateOut(BaseModel):
    group_by: WinRateGroupBy
    from_: date = Field(alias="from")
    to: date
    groups: list[WinRateRow]
    total: WinRateRow

    model_config = ConfigDict(populate_by_name=True)


class DealSizeRow(BaseModel):
    owner_id: str | None = None
    currency: str
    won_count: int
    total: str
    mean: str
    median: str


class DealSizeOut(BaseModel):
    from_: date = Field(alias="from")
    to: date
    groups: list[DealSizeRow]
    total: list[DealSizeRow]

    model_config = ConfigDict(populate_by_name=True)
