"""Mapping of core domain changes to the proto contracts (crm.pipeline.v1) and the outbox.

Every event carries the full snapshot of its aggregate after the change, with the version
of the change (EventMeta.version == snapshot.version)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import outbox
from chassis.events import OutgoingEvent
from crm.common.v1.common_pb2 import EventMeta, Money
from crm.pipeline.v1 import pipeline_pb2 as pb
from crm.registry import ce_type_for
from pipeline.money import format_amount

SOURCE = "crm/pipeline"

Row = Mapping[str, Any]


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _struct(values: Mapping[str, Any] | None) -> Struct:
    s = Struct()
    if values:
        s.update(dict(values))
    return s


def team_message(row: Row) -> pb.Team:
    return pb.Team(
        id=str(row["id"]),
        name=row["name"],
        parent_id=_s(row.get("parent_id")),
        members=[pb.TeamMember(user_id=m["user_id"], role=m["role"]) for m in row["members"]],
        version=row["version"],
    )


def pipeline_message(row: Row) -> pb.Pipeline:
    return pb.Pipeline(
        id=str(row["id"]),
        name=row["name"],
        stages=[
            pb.Stage(
                id=str(s["id"]),
                name=s["name"],
                position=s["position"],
                probability=s["probability"],
                forecast_category=s["forecast_category"],
                is_won=s["is_won"],
                is_lost=s["is_lost"],
            )
            for s in row["stages"]
        ],
        version=row["version"],
    )


def effective_category(row: Row) -> str:
    """The deal's override, else its stage's default."""
    return str(row.get("forecast_category") or row.get("stage_forecast_category") or "")


def deal_message(row: Row) -> pb.Deal:
    currency = row["currency"]
    close: date | None = row.get("expected_close_date")
    return pb.Deal(
        id=str(row["id"]),
        name=row["name"],
        contact_id=_s(row.get("contact_id")),
        company_id=_s(row.get("company_id")),
        owner_id=row["owner_id"],
        pipeline_id=str(row["pipeline_id"]),
        stage_id=str(row["stage_id"]),
        stage_name=_s(row.get("stage_name")),
        amount=Money(amount=format_amount(row["amount"], currency), currency=currency),
        expected_close_date=close.isoformat() if close else "",
        forecast_category=effective_category(row),
        line_items=[
            pb.LineItem(
                product=li["product"],
                quantity=li["quantity"],
                unit_price=li["unit_price"],
                discount_percent=li["discount_percent"],
                amount=li["amount"],
            )
            for li in row.get("line_items") or []
        ],
        splits=[
            pb.Split(user_id=s["user_id"], percent=s["percent"]) for s in row.get("splits") or []
        ],
        custom_fields=_struct(row.get("custom_fields")),
        external_ids=dict(row.get("external_ids") or {}),
        status=row["status"],
        lost_reason=_s(row.get("lost_reason")),
        closed_at=ts(row.get("closed_at")),
        created_at=ts(row["created_at"]),
        updated_at=ts(row["updated_at"]),
        version=row["version"],
    )


def order_message(row: Row) -> pb.Order:
    currency = row["currency"]
    amount: Decimal = row["amount"]
    return pb.Order(
        id=str(row["id"]),
        contact_id=_s(row.get("contact_id")),
        company_id=_s(row.get("company_id")),
        deal_id=_s(row.get("deal_id")),
        number=_s(row.get("number")),
        ordered_at=ts(row["ordered_at"]),
        amount=Money(amount=format_amount(amount, currency), currency=currency),
        status=row["status"],
        paid_at=ts(row.get("paid_at")),
        refunded_at=ts(row.get("refunded_at")),
        lines=[
            pb.OrderLine(
                product=li["product"],
                quantity=li["quantity"],
                unit_price=li["unit_price"],
                amount=li["amount"],
            )
            for li in row.get("lines") or []
        ],
        external_ids=dict(row.get("external_ids") or {}),
        owner_id=_s(row.get("owner_id")),
        version=row["version"],
    )


class EventSink:
    """Builds the events of one unit of work with its actor and origin and adds them to the
    session's outbox."""

    def __init__(self, session: AsyncSession, tenant: str, actor: str, origin: str) -> None:
        self.session = session
        self.tenant = tenant
        self.actor = actor
        self.origin = origin

    def meta(
        self, aggregate_id: Any, version: int, at: datetime, changed: Sequence[str] = ()
    ) -> EventMeta:
        return EventMeta(
            tenant_id=self.tenant,
            aggregate_id=str(aggregate_id),
            version=version,
            actor=self.actor,
            origin=self.origin,
            occurred_at=ts(at),
            changed_fields=list(changed),
        )

    def emit(self, message: Message, aggregate_id: Any, version: int) -> None:
        outbox.add(
            self.session,
            OutgoingEvent(
                message=message,
                ce_type=ce_type_for(message),
                tenant=self.tenant,
                aggregate_id=str(aggregate_id),
                version=version,
                source=SOURCE,
            ),
        )

    def _m(self, row: Row, changed: Sequence[str] = ()) -> EventMeta:
        return self.meta(row["id"], row["version"], row["updated_at"], changed)

    # -- teams -------------------------------------------------------------------------------

    def team_created(self, row: Row) -> None:
        self.emit(
            pb.TeamCreated(meta=self._m(row), team=team_message(row)), row["id"], row["version"]
        )

    def team_updated(self, row: Row, changed: Sequence[str]) -> None:
        msg = pb.TeamUpdated(meta=self._m(row, changed), team=team_message(row))
        self.emit(msg, row["id"], row["version"])

    def team_deleted(self, row: Row) -> None:
        self.emit(pb.TeamDeleted(meta=self._m(row)), row["id"], row["version"])

    # -- pipelines ---------------------------------------------------------------------------

    def pipeline_created(self, row: Row) -> None:
        msg = pb.PipelineCreated(meta=self._m(row), pipeline=pipeline_message(row))
        self.emit(msg, row["id"], row["version"])

    def pipeline_updated(self, row: Row, changed: Sequence[str]) -> None:
        msg = pb.PipelineUpdated(meta=self._m(row, changed), pipeline=pipeline_message(row))
        self.emit(msg, row["id"], row["version"])

    def pipeline_deleted(self, row: Row) -> None:
        self.emit(pb.PipelineDeleted(meta=self._m(row)), row["id"], row["version"])

    # -- deals -------------------------------------------------------------------------------

    def deal_created(self, row: Row) -> None:
        self.emit(
            pb.DealCreated(meta=self._m(row), deal=deal_message(row)), row["id"], row["version"]
        )

    def deal_updated(self, row: Row, changed: Sequence[str]) -> None:
        msg = pb.DealUpdated(meta=self._m(row, changed), deal=deal_message(row))
        self.emit(msg, row["id"], row["version"])

    def deal_stage_changed(self, row: Row, from_stage: Any, changed: Sequence[str]) -> None:
        msg = pb.DealStageChanged(
            meta=self._m(row, changed),
            deal=deal_message(row),
            from_stage_id=str(from_stage),
            to_stage_id=str(row["stage_id"]),
        )
        self.emit(msg, row["id"], row["version"])

    def deal_won(self, row: Row, from_stage: Any) -> None:
        msg = pb.DealWon(meta=self._m(row), deal=deal_message(row), from_stage_id=str(from_stage))
        self.emit(msg, row["id"], row["version"])

    def deal_lost(self, row: Row, from_stage: Any) -> None:
        msg = pb.DealLost(meta=self._m(row), deal=deal_message(row), from_stage_id=str(from_stage))
        self.emit(msg, row["id"], row["version"])

    def deal_reopened(self, row: Row, previous_status: str, previous_closed_at: datetime) -> None:
        msg = pb.DealReopened(
            meta=self._m(row),
            deal=deal_message(row),
            previous_status=previous_status,
            previous_closed_at=ts(previous_closed_at),
        )
        self.emit(msg, row["id"], row["version"])

    def deal_deleted(self, row: Row) -> None:
        self.emit(
            pb.DealDeleted(meta=self._m(row), deal=deal_message(row)), row["id"], row["version"]
        )

    # -- orders ------------------------------------------------------------------------------

    def order_changed(self, row: Row, previous_status: str | None, changed: Sequence[str]) -> None:
        """order.paid when the order became paid, order.refunded when it became refunded,
        else order.upserted (the contract emits one instead of the other)."""
        meta = self._m(row, changed)
        order = order_message(row)
        msg: Message
        if row["status"] == "paid" and previous_status != "paid":
            msg = pb.OrderPaid(meta=meta, order=order)
        elif row["status"] == "refunded" and previous_status != "refunded":
            msg = pb.OrderRefunded(meta=meta, order=order)
        else:
            msg = pb.OrderUpserted(meta=meta, order=order)
        self.emit(msg, row["id"], row["version"])
