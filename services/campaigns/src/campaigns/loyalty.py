"""Loyalty: programs, an append-only points ledger per member (earn, redeem, expire,
reverse, adjust), tiers over a rolling 365 days, expiry on a durable timer.

The member row is the lock: every ledger write takes `SELECT ... FOR UPDATE` on it first, so
concurrent redemptions serialize and the balance check can never be raced into an
overdraw. `loyalty_lots` tracks what is left of each earn entry (consumed oldest-expiry
first, the reversed source's own lot first), so expiry only takes points not yet spent.

points = floor(amount x points_per_unit); earning needs the program's currency. A reopened
deal or refunded order reverses what its source earned net; the balance may go negative
when those points were already redeemed (the ledger shows the debt)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns import replica
from campaigns.common import Actor, ActorDep, ResourceNotFound, Row, emit, now, one, rows, ts
from campaigns.resources import Table
from chassis.db import Database, SessionDep
from chassis.http import Page, check_if_match, set_etag
from chassis.problems import invalid
from chassis.scheduler import Scheduler
from crm.campaigns.v1 import campaigns_pb2 as pb

WINDOW = timedelta(days=365)


class Tier(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    min_points: int = Field(ge=0)


class ProgramIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Rewards"])
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])
    points_per_unit: str = Field(examples=["1"])
    earn_on: Literal["deal_won", "order_paid"]
    tiers: list[Tier] = Field(default_factory=list, max_length=50)
    points_expire_days: int = Field(default=0, ge=0, le=36500)

    @field_validator("points_per_unit")
    @classmethod
    def _ppu(cls, v: str) -> str:
        try:
            d = Decimal(v)
        except InvalidOperation as e:
            raise ValueError('must be a decimal number as a string, e.g. "1"') from e
        if not d.is_finite() or d <= 0 or d > 1_000_000:
            raise ValueError("must be greater than 0")
        return v

    @model_validator(mode="after")
    def _tiers(self) -> ProgramIn:
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        mins = [t.min_points for t in self.tiers]
        if mins != sorted(set(mins)):
            raise ValueError("tiers must be in ascending, distinct min_points")
        return self


class ProgramPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    tiers: list[Tier] | None = Field(default=None, max_length=50)
    points_expire_days: int | None = Field(default=None, ge=0, le=36500)


class ProgramPublic(BaseModel):
    id: uuid.UUID
    name: str
    currency: str
    points_per_unit: str
    earn_on: str
    tiers: list[Tier]
    points_expire_days: int
    created_at: datetime
    updated_at: datetime
    version: int


class EntryPublic(BaseModel):
    id: uuid.UUID
    kind: str
    points: int
    reason: str
    source: str
    occurred_at: datetime


class NextTier(BaseModel):
    name: str
    min_points: int
    points_needed: int


class MemberPublic(BaseModel):
    contact_id: uuid.UUID
    program_id: uuid.UUID
    balance: int
    tier: str | None
    points_365d: int
    next_tier: NextTier | None
    history: list[EntryPublic]


class RedeemIn(BaseModel):
    points: int = Field(gt=0, le=1_000_000_000)
    reason: str = Field(min_length=1, max_length=500)
    program_id: uuid.UUID | None = None


class AdjustIn(BaseModel):
    points: int = Field(ge=-1_000_000_000, le=1_000_000_000)
    reason: str = Field(min_length=1, max_length=500)
    program_id: uuid.UUID | None = None


def _program_msg(row: Row) -> pb.LoyaltyProgram:
    return pb.LoyaltyProgram(
        id=str(row["id"]),
        name=row["name"],
        currency=row["currency"],
        points_per_unit=format(Decimal(row["points_per_unit"]), "f"),
        earn_on=row["earn_on"],
        tiers=[pb.LoyaltyTier(name=t["name"], min_points=t["min_points"]) for t in row["tiers"]],
        points_expire_days=row["points_expire_days"],
        version=row["version"],
    )


TABLE = Table(
    "loyalty_programs",
    "loyalty program",
    ("name", "currency", "points_per_unit", "earn_on", "tiers", "points_expire_days"),
    lambda change, row: pb.LoyaltyProgramChanged(change=change, program=_program_msg(row)),
    json_columns=("tiers",),
)


def tier_for(tiers: list[dict[str, Any]], points: int) -> tuple[str | None, NextTier | None]:
    current: str | None = None
    nxt: NextTier | None = None
    for t in sorted(tiers, key=lambda t: int(t["min_points"])):
        if points >= int(t["min_points"]):
            current = t["name"]
        elif nxt is None:
            nxt = NextTier(
                name=t["name"],
                min_points=t["min_points"],
                points_needed=int(t["min_points"]) - points,
            )
    return current, nxt


def points_for(amount: Decimal, per_unit: Decimal) -> int:
    return int((amount * per_unit).to_integral_value(rounding=ROUND_FLOOR))


# --- ledger ---------------------------------------------------------------------------------


async def member_for_update(
    session: AsyncSession, tenant: str, program_id: uuid.UUID, contact_id: uuid.UUID
) -> Row:
    at = now()
    await session.execute(
        text(
            "INSERT INTO loyalty_members (tenant_id, id, program_id, contact_id, created_at, "
            "updated_at) "
            "VALUES (:t, :i, :p, :c, :now, :now) ON CONFLICT (tenant_id, program_id, contact_id) "
            "DO NOTHING"
        ),
        {"t": tenant, "i": uuid.uuid4(), "p": program_id, "c": contact_id, "now": at},
    )
    row = await one(
        session,
        "SELECT * FROM loyalty_members WHERE tenant_id = :t AND program_id = :p AND contact_id = "
        ":c FOR UPDATE",
        {"t": tenant, "p": program_id, "c": contact_id},
    )
    assert row is not None
    return row


async def points_365d(
    session: AsyncSession, tenant: str, member_id: uuid.UUID, at: datetime
) -> int:
    row = await one(
        session,
        "SELECT GREATEST(0, COALESCE(sum(points), 0)) AS p FROM loyalty_ledger WHERE tenant_id = "
        ":t "
        "AND member_id = :m AND kind IN ('earn', 'reverse') AND occurred_at > :since",
        {"t": tenant, "m": member_id, "since": at - WINDOW},
    )
    return int(row["p"]) if row else 0


async def _consume(
    session: AsyncSession, tenant: str, member_id: uuid.UUID, amount: int, source: str = ""
) -> None:
    """Take `amount` points out of the member's lots: the source's own lot first, then the
    earliest-expiring ones."""
    if amount <= 0:
        return
    await session.execute(
        text(
            "UPDATE loyalty_lots l SET remaining = l.remaining - LEAST(l.remaining, :amount - "
            "x.before) "
            "FROM (SELECT entry_id, sum(remaining) OVER (ORDER BY (source = :src AND :src <> '') "
            "DESC, "
            "expires_at NULLS LAST, seq) - remaining AS before FROM loyalty_lots WHERE tenant_id = "
            ":t "
            "AND member_id = :m AND remaining > 0) x WHERE l.tenant_id = :t AND l.entry_id = "
            "x.entry_id "
            "AND x.before < :amount"
        ),
        {"t": tenant, "m": member_id, "amount": amount, "src": source},
    )


def _member_msg(m: Row, p365: int) -> pb.LoyaltyMember:
    return pb.LoyaltyMember(
        id=str(m["id"]),
        program_id=str(m["program_id"]),
        contact_id=str(m["contact_id"]),
        balance=m["balance"],
        tier=m["tier"] or "",
        points_365d=p365,
        version=m["version"],
    )


EVENTS: dict[str, Any] = {
    "earn": pb.PointsEarned,
    "redeem": pb.PointsRedeemed,
    "reverse": pb.PointsReversed,
    "expire": pb.PointsExpired,
}


async def book(
    session: AsyncSession,
    actor: Actor,
    program: Row,
    member: Row,
    kind: str,
    points: int,
    reason: str,
    source: str = "",
    occurred_at: datetime | None = None,
) -> Row:
    """Append one entry to a locked member's ledger; update balance, lots and tier; emit."""
    at = occurred_at or now()
    entry_id = uuid.uuid4()
    entry = await one(
        session,
        "INSERT INTO loyalty_ledger (tenant_id, id, member_id, kind, points, reason, source, "
        "occurred_at) "
        "VALUES (:t, :i, :m, :k, :p, :r, :s, :at) RETURNING *",
        {
            "t": actor.tenant,
            "i": entry_id,
            "m": member["id"],
            "k": kind,
            "p": points,
            "r": reason,
            "s": source,
            "at": at,
        },
    )
    assert entry is not None
    if points > 0:
        days = program["points_expire_days"]
        await session.execute(
            text(
                "INSERT INTO loyalty_lots (tenant_id, entry_id, seq, member_id, source, "
                "expires_at, remaining) "
                "VALUES (:t, :i, :seq, :m, :s, :exp, :p)"
            ),
            {
                "t": actor.tenant,
                "i": entry_id,
                "seq": entry["seq"],
                "m": member["id"],
                "s": source,
                "exp": at + timedelta(days=days) if days else None,
                "p": points,
            },
        )
    elif kind != "expire":
        await _consume(
            session, actor.tenant, member["id"], -points, source if kind == "reverse" else ""
        )
    p365 = await points_365d(session, actor.tenant, member["id"], now())
    tier, _ = tier_for(program["tiers"], p365)
    saved = await one(
        session,
        "UPDATE loyalty_members SET balance = balance + :p, version = version + 1, "
        "updated_at = :now, tier_checked_at = :now WHERE tenant_id = :t AND id = :m RETURNING *",
        {"p": points, "now": now(), "t": actor.tenant, "m": member["id"]},
    )
    assert saved is not None
    msg_entry = pb.LedgerEntry(
        id=str(entry_id), kind=kind, points=points, reason=reason, source=source, occurred_at=ts(at)
    )
    # A manual adjustment is published as earned or redeemed; entry.kind says "adjust".
    event = EVENTS.get(kind) or (pb.PointsEarned if points > 0 else pb.PointsRedeemed)
    emit(
        session,
        actor,
        event(member=_member_msg(saved, p365), entry=msg_entry),
        saved["id"],
        saved["version"],
    )
    if tier != saved["tier"]:
        previous = saved["tier"]
        saved = await one(
            session,
            "UPDATE loyalty_members SET tier = :tier, version = version + 1 WHERE tenant_id = :t "
            "AND id = :m RETURNING *",
            {"tier": tier, "t": actor.tenant, "m": member["id"]},
        )
        assert saved is not None
        emit(
            session,
            actor,
            pb.TierChanged(member=_member_msg(saved, p365), previous_tier=previous or ""),
            saved["id"],
            saved["version"],
        )
    return saved


async def programs_earning_on(
    session: AsyncSession, tenant: str, earn_on: str, currency: str
) -> list[Row]:
    return await rows(
        session,
        "SELECT * FROM loyalty_programs WHERE tenant_id = :t AND earn_on = :e AND currency = :c "
        "AND deleted_at IS NULL",
        {"t": tenant, "e": earn_on, "c": currency},
    )


async def _net(session: AsyncSession, tenant: str, member_id: uuid.UUID, source: str) -> int:
    row = await one(
        session,
        "SELECT COALESCE(sum(points), 0) AS n FROM loyalty_ledger WHERE tenant_id = :t AND "
        "member_id = :m "
        "AND source = :s AND kind IN ('earn', 'reverse')",
        {"t": tenant, "m": member_id, "s": source},
    )
    return int(row["n"]) if row else 0


async def earn(
    session: AsyncSession,
    actor: Actor,
    earn_on: str,
    contact_id: uuid.UUID,
    amount: Decimal,
    currency: str,
    source: str,
    at: datetime | None,
) -> None:
    """Earn for a won deal / paid order in every matching program (once per source until it
    is reversed)."""
    for program in await programs_earning_on(session, actor.tenant, earn_on, currency):
        points = points_for(amount, Decimal(program["points_per_unit"]))
        if points <= 0:
            continue
        member = await member_for_update(session, actor.tenant, program["id"], contact_id)
        if await _net(session, actor.tenant, member["id"], source) > 0:
            continue
        await book(session, actor, program, member, "earn", points, earn_on, source, at)


async def reverse(
    session: AsyncSession, actor: Actor, contact_id: uuid.UUID, source: str, reason: str
) -> None:
    """Take back what `source` earned net, in every program."""
    members = await rows(
        session,
        "SELECT m.program_id FROM loyalty_members m WHERE m.tenant_id = :t AND m.contact_id = :c",
        {"t": actor.tenant, "c": contact_id},
    )
    for m in members:
        program = await one(
            session,
            "SELECT * FROM loyalty_programs WHERE tenant_id = :t AND id = :p",
            {"t": actor.tenant, "p": m["program_id"]},
        )
        if program is None:
            continue
        member = await member_for_update(session, actor.tenant, program["id"], contact_id)
        net = await _net(session, actor.tenant, member["id"], source)
        if net > 0:
            await book(session, actor, program, member, "reverse", -net, reason, source)


# --- expiry timer -----------------------------------------------------------------------------


async def _expire_member(session: AsyncSession, member: Row, at: datetime) -> int:
    lots = await rows(
        session,
        "UPDATE loyalty_lots n SET remaining = 0 FROM loyalty_lots o WHERE n.tenant_id = :t AND "
        "n.member_id = :m AND n.remaining > 0 AND n.expires_at <= :now AND o.tenant_id = "
        "n.tenant_id "
        "AND o.entry_id = n.entry_id RETURNING o.remaining",
        {"t": member["tenant_id"], "m": member["id"], "now": at},
    )
    return sum(int(r["remaining"]) for r in lots)


async def fire_expiry(session: AsyncSession, at: datetime, limit: int) -> int:
    due = await rows(
        session,
        "SELECT DISTINCT tenant_id, member_id FROM loyalty_lots WHERE remaining > 0 AND expires_at "
        "<= :now LIMIT :limit",
        {"now": at, "limit": limit},
    )
    fired = 0
    for d in due:
        member = await one(
            session,
            "SELECT * FROM loyalty_members WHERE tenant_id = :t AND id = :m FOR UPDATE SKIP LOCKED",
            {"t": d["tenant_id"], "m": d["member_id"]},
        )
        if member is None:
            continue
        program = await one(
            session,
            "SELECT * FROM loyalty_programs WHERE tenant_id = :t AND id = :p",
            {"t": member["tenant_id"], "p": member["program_id"]},
        )
        points = await _expire_member(session, member, at)
        if points > 0 and program is not None:
            actor = Actor(member["tenant_id"], "system:loyalty-expiry", "crm/campaigns:loyalty")
            await book(session, actor, program, member, "expire", -points, "expired", "", at)
        fired += 1
    return fired


TIER_CHECK_EVERY = timedelta(days=1)


async def fire_tier_checks(session: AsyncSession, at: datetime, limit: int) -> int:
    """Re-evaluate stored tiers not computed for a day: points leave the 365-day window
    without any ledger entry."""
    due = await rows(
        session,
        "SELECT m.*, p.tiers FROM loyalty_members m JOIN loyalty_programs p ON p.tenant_id = "
        "m.tenant_id AND p.id = m.program_id WHERE m.tier IS NOT NULL "
        "AND m.tier_checked_at <= :due ORDER BY m.tier_checked_at LIMIT :limit "
        "FOR UPDATE OF m SKIP LOCKED",
        {"due": at - TIER_CHECK_EVERY, "limit": limit},
    )
    for m in due:
        p365 = await points_365d(session, m["tenant_id"], m["id"], at)
        tier, _ = tier_for(m["tiers"], p365)
        if tier == m["tier"]:
            await one(
                session,
                "UPDATE loyalty_members SET tier_checked_at = :now WHERE tenant_id = :t "
                "AND id = :i RETURNING 1 AS ok",
                {"now": at, "t": m["tenant_id"], "i": m["id"]},
            )
            continue
        saved = await one(
            session,
            "UPDATE loyalty_members SET tier = :tier, tier_checked_at = :now, "
            "version = version + 1 WHERE tenant_id = :t AND id = :i RETURNING *",
            {"tier": tier, "now": at, "t": m["tenant_id"], "i": m["id"]},
        )
        assert saved is not None
        actor = Actor(m["tenant_id"], "system:loyalty-tiers", "crm/campaigns:loyalty")
        emit(
            session,
            actor,
            pb.TierChanged(member=_member_msg(saved, p365), previous_tier=m["tier"] or ""),
            saved["id"],
            saved["version"],
        )
    return len(due)


async def next_tier_check(session: AsyncSession) -> datetime | None:
    row = await one(
        session,
        "SELECT min(tier_checked_at) AS due FROM loyalty_members WHERE tier IS NOT NULL",
    )
    return row["due"] + TIER_CHECK_EVERY if row and row["due"] else None


def tier_scheduler(db: Database, poll_seconds: float) -> Scheduler:
    return Scheduler(
        "loyalty-tiers", db, fire_tier_checks, next_due=next_tier_check, poll_seconds=poll_seconds
    )


async def next_expiry(session: AsyncSession) -> datetime | None:
    row = await one(session, "SELECT min(expires_at) AS due FROM loyalty_lots WHERE remaining > 0")
    return row["due"] if row else None


def scheduler(db: Database, poll_seconds: float) -> Scheduler:
    return Scheduler(
        "loyalty-expiry", db, fire_expiry, next_due=next_expiry, poll_seconds=max(poll_seconds, 1.0)
    )


# --- API --------------------------------------------------------------------------------------

router = APIRouter(prefix="/v1/loyalty", tags=["loyalty"])
IfMatch = Annotated[str | None, Header()]


def out(row: Row, response: Response | None = None) -> ProgramPublic:
    if response is not None:
        set_etag(response, row["version"])
    return ProgramPublic.model_validate(
        {**row, "points_per_unit": format(Decimal(row["points_per_unit"]), "f")}
    )


@router.post("/programs", status_code=201, response_model=ProgramPublic)
async def create_program(
    body: ProgramIn, session: SessionDep, actor: ActorDep, response: Response
) -> ProgramPublic:
    """Create a loyalty program."""
    at = now()
    row = {
        **body.model_dump(),
        "points_per_unit": Decimal(body.points_per_unit),
        "tiers": [t.model_dump() for t in body.tiers],
        "tenant_id": actor.tenant,
        "id": uuid.uuid4(),
        "created_at": at,
        "updated_at": at,
        "version": 1,
    }
    saved = await TABLE.save(session, actor, row, "created")
    response.headers["Location"] = f"/v1/loyalty/programs/{saved['id']}"
    return out(saved, response)


@router.get("/programs", response_model=Page[ProgramPublic])
async def list_programs(
    session: SessionDep,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[ProgramPublic]:
    """List loyalty programs."""
    found, nxt = await TABLE.page(session, actor.tenant, limit, cursor)
    return Page(items=[out(r) for r in found], next_cursor=nxt)


@router.get("/programs/{program_id}", response_model=ProgramPublic)
async def get_program(
    program_id: uuid.UUID, session: SessionDep, actor: ActorDep, response: Response
) -> ProgramPublic:
    """Get a loyalty program."""
    return out(await TABLE.get(session, actor.tenant, program_id), response)


@router.patch("/programs/{program_id}", response_model=ProgramPublic)
async def patch_program(
    program_id: uuid.UUID,
    body: ProgramPatch,
    session: SessionDep,
    actor: ActorDep,
    response: Response,
    if_match: IfMatch = None,
) -> ProgramPublic:
    """Rename, change tiers or expiry (If-Match required); earning rules are fixed."""
    row = await TABLE.get(session, actor.tenant, program_id, lock=True)
    check_if_match(if_match, row["version"])
    patch = body.model_dump(exclude_none=True)
    if "tiers" in patch:
        try:
            ProgramIn.model_validate({**out(row).model_dump(), "tiers": patch["tiers"]})
        except Exception as e:
            raise invalid(
                "tiers", "tiers must have unique names and ascending, distinct min_points"
            ) from e
    changed = [k for k, v in patch.items() if row[k] != v]
    if changed:
        row.update(patch, updated_at=now(), version=row["version"] + 1)
        row = await TABLE.save(session, actor, row, "updated", changed)
    return out(row, response)


async def _program_for(session: AsyncSession, tenant: str, program_id: uuid.UUID | None) -> Row:
    if program_id is not None:
        try:
            return await TABLE.get(session, tenant, program_id)
        except ResourceNotFound as e:
            raise invalid("program_id", f"unknown loyalty program {program_id}") from e
    found = await rows(
        session,
        "SELECT * FROM loyalty_programs WHERE tenant_id = :t AND deleted_at IS NULL LIMIT 2",
        {"t": tenant},
    )
    if len(found) != 1:
        raise invalid("program_id", "required: the tenant has no or several loyalty programs")
    return found[0]


async def member_view(
    session: AsyncSession, tenant: str, program: Row, contact_id: uuid.UUID
) -> MemberPublic:
    member = await one(
        session,
        "SELECT * FROM loyalty_members WHERE tenant_id = :t AND program_id = :p AND contact_id = "
        ":c",
        {"t": tenant, "p": program["id"], "c": contact_id},
    )
    if member is None and await replica.get_contact(session, tenant, contact_id) is None:
        raise ResourceNotFound("loyalty member", contact_id)
    history: list[Row] = []
    p365 = 0
    if member is not None:
        p365 = await points_365d(session, tenant, member["id"], now())
        history = await rows(
            session,
            "SELECT * FROM loyalty_ledger WHERE tenant_id = :t AND member_id = :m ORDER BY seq "
            "DESC LIMIT 100",
            {"t": tenant, "m": member["id"]},
        )
    tier, nxt = tier_for(program["tiers"], p365)
    return MemberPublic(
        contact_id=contact_id,
        program_id=program["id"],
        balance=member["balance"] if member else 0,
        tier=tier,
        points_365d=p365,
        next_tier=nxt,
        history=[EntryPublic.model_validate(h) for h in history],
    )


@router.get("/members/{contact_id}", response_model=MemberPublic)
async def get_member(
    contact_id: uuid.UUID, session: SessionDep, actor: ActorDep, program_id: uuid.UUID | None = None
) -> MemberPublic:
    """Balance, tier, points of the last 365 days, the next tier and the latest 100 entries."""
    program = await _program_for(session, actor.tenant, program_id)
    return await member_view(session, actor.tenant, program, contact_id)


@router.post("/members/{contact_id}/redeem", response_model=MemberPublic)
async def redeem(
    contact_id: uuid.UUID, body: RedeemIn, session: SessionDep, actor: ActorDep
) -> MemberPublic:
    """Redeem points; 422 when the balance is short (concurrent redemptions never overdraw)."""
    program = await _program_for(session, actor.tenant, body.program_id)
    member = await member_for_update(session, actor.tenant, program["id"], contact_id)
    if member["balance"] < body.points:
        raise invalid("points", f"balance is {member['balance']}, cannot redeem {body.points}")
    await book(session, actor, program, member, "redeem", -body.points, body.reason)
    return await member_view(session, actor.tenant, program, contact_id)


@router.post("/members/{contact_id}/adjust", response_model=MemberPublic)
async def adjust(
    contact_id: uuid.UUID, body: AdjustIn, session: SessionDep, actor: ActorDep
) -> MemberPublic:
    """Book a manual adjustment (positive or negative); a negative one may not overdraw."""
    program = await _program_for(session, actor.tenant, body.program_id)
    if await replica.get_contact(session, actor.tenant, contact_id) is None:
        raise ResourceNotFound("contact", contact_id)
    member = await member_for_update(session, actor.tenant, program["id"], contact_id)
    if body.points == 0:
        raise invalid("points", "must not be 0")
    if body.points < 0 and member["balance"] + body.points < 0:
        raise invalid("points", f"balance is {member['balance']}")
    await book(session, actor, program, member, "adjust", body.points, body.reason)
    return await member_view(session, actor.tenant, program, contact_id)


async def merge(
    session: AsyncSession, tenant: str, survivor: uuid.UUID, losers: list[uuid.UUID]
) -> None:
    """Contacts merged: a loser's member moves to the survivor when the survivor has none in
    that program; otherwise its balance moves with two adjust entries."""
    actor = Actor(tenant, "system:contact-merge", "crm/campaigns:loyalty")
    for loser in losers:
        for m in await rows(
            session,
            "SELECT * FROM loyalty_members WHERE tenant_id = :t AND contact_id = :c FOR UPDATE",
            {"t": tenant, "c": loser},
        ):
            program = await one(
                session,
                "SELECT * FROM loyalty_programs WHERE tenant_id = :t AND id = :p",
                {"t": tenant, "p": m["program_id"]},
            )
            if program is None:
                continue
            taken = await one(
                session,
                "SELECT id FROM loyalty_members WHERE tenant_id = :t AND program_id = :p "
                "AND contact_id = :s",
                {"t": tenant, "p": m["program_id"], "s": survivor},
            )
            if taken is None:
                moved = await one(
                    session,
                    "UPDATE loyalty_members SET contact_id = :s, version = version + 1, "
                    "updated_at = :now WHERE tenant_id = :t AND id = :i RETURNING *",
                    {"s": survivor, "now": now(), "t": tenant, "i": m["id"]},
                )
                assert moved is not None
                p365 = await points_365d(session, tenant, moved["id"], now())
                emit(
                    session,
                    actor,
                    pb.LoyaltyMemberMerged(
                        member=_member_msg(moved, p365), merged_contact_id=str(loser)
                    ),
                    moved["id"],
                    moved["version"],
                )
            elif m["balance"] != 0:
                target = await member_for_update(session, tenant, m["program_id"], survivor)
                await book(
                    session, actor, program, m, "adjust", -m["balance"], f"merged into {survivor}"
                )
                await book(
                    session, actor, program, target, "adjust", m["balance"], f"merged from {loser}"
                )
