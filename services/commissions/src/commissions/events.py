"""Mapping of domain changes to the proto contracts (crm.commissions.v1) and outbox events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import outbox
from chassis.events import OutgoingEvent
from commissions.calc import dec
from crm.commissions.v1 import commissions_pb2 as pb
from crm.common.v1.common_pb2 import EventMeta, Money
from crm.registry import ce_type_for

SOURCE = "crm/commissions"
Row = Mapping[str, Any]


def _money(amount: Decimal | None, currency: str) -> Money | None:
    return None if amount is None else Money(amount=dec(amount), currency=currency)


def _meta(
    tenant: str, aggregate_id: str, version: int, actor: str, origin: str, changed: Sequence[str]
) -> EventMeta:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC))
    return EventMeta(
        tenant_id=tenant,
        aggregate_id=aggregate_id,
        version=version,
        actor=actor,
        origin=origin,
        occurred_at=ts,
        changed_fields=list(changed),
    )


class Emitter:
    """Adds one outbox event per aggregate version bump, in the caller's transaction."""

    def __init__(self, session: AsyncSession, tenant: str, actor: str, origin: str = "") -> None:
        self.session = session
        self.tenant = tenant
        self.actor = actor
        self.origin = origin

    def _add(self, msg: Message, aggregate_id: str, version: int) -> None:
        outbox.add(
            self.session,
            OutgoingEvent(
                message=msg,
                ce_type=ce_type_for(msg),
                tenant=self.tenant,
                aggregate_id=aggregate_id,
                version=version,
                source=SOURCE,
            ),
        )

    def meta(self, aggregate_id: str, version: int, changed: Sequence[str] = ()) -> EventMeta:
        return _meta(self.tenant, aggregate_id, version, self.actor, self.origin, changed)

    def plan_changed(self, row: Row, change: str) -> None:
        pid = str(row["id"])
        plan = pb.CommissionPlan(
            id=pid,
            name=row["name"],
            period=row["period"],
            currency=row["currency"],
            latest_version=row["latest_version"],
            version=row["version"],
        )
        msg = pb.PlanChanged(meta=self.meta(pid, row["version"]), plan=plan, change=change)
        self._add(msg, pid, row["version"])

    def quota_set(self, row: Row, changed: Sequence[str]) -> None:
        qid = f"{row['owner_kind']}:{row['owner_id']}:{row['period']}"
        quota = pb.Quota(
            id=qid,
            user_id=row["owner_id"] if row["owner_kind"] == "user" else "",
            team_id=row["owner_id"] if row["owner_kind"] == "team" else "",
            period=row["period"],
            amount=_money(row["amount"], row["currency"]),
            version=row["version"],
        )
        msg = pb.QuotaSet(meta=self.meta(qid, row["version"], changed), quota=quota)
        self._add(msg, qid, row["version"])

    def statement_updated(
        self, row: Row, changed: Sequence[str], previous_payout: Decimal | None
    ) -> None:
        sid = str(row["id"])
        cur = row["currency"]
        st = pb.Statement(
            id=sid,
            user_id=row["user_id"],
            period=row["period"],
            plan_id=str(row["plan_id"]),
            plan_version=row["plan_version"],
            credit=_money(row["credit"], cur),
            quota=_money(row["quota"], cur),
            attainment="" if row["attainment"] is None else dec(row["attainment"]),
            payout=_money(row["payout"], cur),
            status=row["status"],
            locked=row["locked"],
            version=row["version"],
        )
        msg = pb.StatementUpdated(
            meta=self.meta(sid, row["version"], changed),
            statement=st,
            previous_payout=_money(previous_payout, cur),
        )
        self._add(msg, sid, row["version"])

    def period_closed(self, period: str, statements: int) -> None:
        msg = pb.PeriodClosed(meta=self.meta(period, 1), period=period, statements=statements)
        self._add(msg, period, 1)

    @staticmethod
    def _dispute(row: Row) -> pb.Dispute:
        return pb.Dispute(
            id=str(row["id"]),
            statement_id=str(row["statement_id"]),
            line_id=row["line_id"],
            user_id=row["user_id"],
            period=row["period"],
            reason=row["reason"],
            status=row["status"],
            resolution=row["resolution"] or "",
            adjustment_id="" if row["adjustment_id"] is None else str(row["adjustment_id"]),
            version=row["version"],
        )

    def dispute_opened(self, row: Row) -> None:
        did = str(row["id"])
        msg = pb.DisputeOpened(meta=self.meta(did, row["version"]), dispute=self._dispute(row))
        self._add(msg, did, row["version"])

    def dispute_resolved(self, row: Row) -> None:
        did = str(row["id"])
        msg = pb.DisputeResolved(
            meta=self.meta(did, row["version"], ["status", "resolution"]),
            dispute=self._dispute(row),
        )
        self._add(msg, did, row["version"])

    def adjustment_booked(self, row: Row) -> None:
        aid = str(row["id"])
        adj = pb.Adjustment(
            id=aid,
            user_id=row["user_id"],
            period=row["period"],
            amount=_money(row["amount"], row["currency"]),
            kind=row["kind"],
            reason=row["reason"],
            origin_period=row["origin_period"] or "",
            version=1,
        )
        self._add(pb.AdjustmentBooked(meta=self.meta(aid, 1), adjustment=adj), aid, 1)
