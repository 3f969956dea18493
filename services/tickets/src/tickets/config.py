"""Groups (routing), business hours and SLA policies: the tenant's support configuration."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import holidays as holidays_lib
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.http import check_if_match
from chassis.problems import NotFound, invalid
from crm.tickets.v1 import tickets_pb2 as pb
from tickets import events
from tickets.access import Caller
from tickets.businesstime import Calendar, CalendarError
from tickets.schemas import (
    BusinessHoursIn,
    BusinessHoursPatch,
    GroupIn,
    GroupPatch,
    SlaPolicyIn,
    SlaPolicyPatch,
    Targets,
)

Row = dict[str, Any]


class GroupNotFound(NotFound):
    title = "Group not found"


class BusinessHoursNotFound(NotFound):
    title = "Business hours not found"


class PolicyNotFound(NotFound):
    title = "SLA policy not found"


async def _one(session: AsyncSession, sql: str, **params: Any) -> Row | None:
    row = (await session.execute(text(sql), params)).mappings().first()
    return dict(row) if row else None


async def _all(session: AsyncSession, sql: str, **params: Any) -> list[Row]:
    return [dict(r) for r in (await session.execute(text(sql), params)).mappings().all()]


def _now() -> datetime:
    return datetime.now(UTC)


def _emit(
    caller: Caller, session: AsyncSession, msg: Any, row: Row, changed: Sequence[str] = ()
) -> None:
    events.emit(
        session,
        msg,
        tenant=caller.tenant,
        aggregate_id=row["id"],
        version=row["version"],
        actor=caller.sub,
        origin=caller.origin,
        occurred_at=row["updated_at"],
        changed=changed,
    )


# --- groups ----------------------------------------------------------------------------------

GROUP_COLS = "id, name, strategy, agents, created_at, updated_at, version"


async def get_group(
    session: AsyncSession, tenant: str, group_id: uuid.UUID, lock: bool = False
) -> Row:
    row = await _one(
        session,
        f"SELECT {GROUP_COLS}, rr_next FROM groups WHERE tenant_id = :t AND id = :id "
        "AND deleted_at IS NULL" + (" FOR UPDATE" if lock else ""),
        t=tenant,
        id=group_id,
    )
    if row is None:
        raise GroupNotFound(f"no group {group_id}")
    return row


async def list_groups(session: AsyncSession, tenant: str) -> list[Row]:
    return await _all(
        session,
        f"SELECT {GROUP_COLS} FROM groups WHERE tenant_id = :t AND deleted_at IS NULL "
        "ORDER BY name, id",
        t=tenant,
    )


async def create_group(session: AsyncSession, caller: Caller, body: GroupIn) -> Row:
    caller.require_admin()
    now = _now()
    row = await _one(
        session,
        "INSERT INTO groups (tenant_id, id, name, strategy, agents, created_at, updated_at, "
        "version) VALUES (:t, :id, :name, :strategy, :agents, :now, :now, 1) "
        f"RETURNING {GROUP_COLS}",
        t=caller.tenant,
        id=uuid.uuid4(),
        name=body.name,
        strategy=body.strategy,
        agents=list(dict.fromkeys(body.agents)),
        now=now,
    )
    assert row
    _emit(caller, session, pb.GroupCreated(group=events.group_message(row)), row)
    return row


async def update_group(
    session: AsyncSession,
    caller: Caller,
    group_id: uuid.UUID,
    patch: GroupPatch,
    if_match: str | None,
) -> Row:
    caller.require_admin()
    current = await get_group(session, caller.tenant, group_id, lock=True)
    check_if_match(if_match, current["version"])
    values = patch.model_dump(exclude_unset=True)
    if "agents" in values:
        values["agents"] = list(dict.fromkeys(values["agents"] or []))
    changed = [k for k, v in values.items() if v is not None and current[k] != v]
    if not changed:
        return current
    merged = {**current, **{k: values[k] for k in changed}}
    row = await _one(
        session,
        "UPDATE groups SET name = :name, strategy = :strategy, agents = :agents, "
        "updated_at = :now, version = version + 1 WHERE tenant_id = :t AND id = :id "
        f"RETURNING {GROUP_COLS}",
        name=merged["name"],
        strategy=merged["strategy"],
        agents=merged["agents"],
        now=_now(),
        t=caller.tenant,
        id=group_id,
    )
    assert row
    _emit(caller, session, pb.GroupUpdated(group=events.group_message(row)), row, changed)
    return row


_SOFT_DELETABLE = frozenset({"groups", "business_hours", "sla_policies"})


async def _soft_delete(
    session: AsyncSession, caller: Caller, table: str, row_id: uuid.UUID, event: Any
) -> None:
    """Mark a configuration row deleted (version + 1) and publish its deleted event; the
    caller has locked it and checked If-Match."""
    assert table in _SOFT_DELETABLE
    row = await _one(
        session,
        f"UPDATE {table} SET deleted_at = :now, updated_at = :now, version = version + 1 "
        "WHERE tenant_id = :t AND id = :id RETURNING id, version, updated_at",
        now=_now(),
        t=caller.tenant,
        id=row_id,
    )
    assert row
    _emit(caller, session, event, row)


async def delete_group(
    session: AsyncSession, caller: Caller, group_id: uuid.UUID, if_match: str | None
) -> None:
    caller.require_admin()
    current = await get_group(session, caller.tenant, group_id, lock=True)
    check_if_match(if_match, current["version"])
    await _soft_delete(session, caller, "groups", group_id, pb.GroupDeleted())


# --- business hours --------------------------------------------------------------------------

BH_COLS = "id, name, timezone, weekly, holidays, created_at, updated_at, version"


def build_calendar(timezone: str, weekly: dict[str, Any], holidays: list[date]) -> Calendar:
    try:
        return Calendar.build(timezone, weekly, holidays)
    except CalendarError as e:
        raise invalid(e.path, e.message) from None


def _seeded_holidays(body: BusinessHoursIn) -> list[date]:
    days = set(body.holidays)
    if body.holiday_country:
        years = body.holiday_years or [datetime.now(UTC).year]
        try:
            seeded = holidays_lib.country_holidays(
                body.holiday_country, subdiv=body.holiday_subdivision, years=years
            )
        except NotImplementedError:
            raise invalid("holiday_country", "unknown country or subdivision") from None
        days.update(seeded.keys())
    return sorted(days)


def _normalize_weekly(weekly: dict[str, list[list[str]]]) -> dict[str, list[list[str]]]:
    return {d: sorted(v) for d, v in weekly.items() if v}


async def get_business_hours(
    session: AsyncSession, tenant: str, bh_id: uuid.UUID, lock: bool = False
) -> Row:
    row = await _one(
        session,
        f"SELECT {BH_COLS} FROM business_hours WHERE tenant_id = :t AND id = :id "
        "AND deleted_at IS NULL" + (" FOR UPDATE" if lock else ""),
        t=tenant,
        id=bh_id,
    )
    if row is None:
        raise BusinessHoursNotFound(f"no business hours {bh_id}")
    return row


async def list_business_hours(session: AsyncSession, tenant: str) -> list[Row]:
    return await _all(
        session,
        f"SELECT {BH_COLS} FROM business_hours WHERE tenant_id = :t AND deleted_at IS NULL "
        "ORDER BY name, id",
        t=tenant,
    )


async def create_business_hours(
    session: AsyncSession, caller: Caller, body: BusinessHoursIn
) -> Row:
    caller.require_admin()
    days = _seeded_holidays(body)
    build_calendar(body.timezone, body.weekly, days)
    now = _now()
    row = await _one(
        session,
        "INSERT INTO business_hours (tenant_id, id, name, timezone, weekly, holidays, "
        "created_at, updated_at, version) VALUES (:t, :id, :name, :tz, CAST(:weekly AS jsonb), "
        f":holidays, :now, :now, 1) RETURNING {BH_COLS}",
        t=caller.tenant,
        id=uuid.uuid4(),
        name=body.name,
        tz=body.timezone,
        weekly=json.dumps(_normalize_weekly(body.weekly)),
        holidays=days,
        now=now,
    )
    assert row
    _emit(
        caller,
        session,
        pb.BusinessHoursCreated(business_hours=events.business_hours_message(row)),
        row,
    )
    return row


async def update_business_hours(
    session: AsyncSession,
    caller: Caller,
    bh_id: uuid.UUID,
    patch: BusinessHoursPatch,
    if_match: str | None,
) -> Row:
    caller.require_admin()
    current = await get_business_hours(session, caller.tenant, bh_id, lock=True)
    check_if_match(if_match, current["version"])
    values = {k: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None}
    if "weekly" in values:
        values["weekly"] = _normalize_weekly(values["weekly"])
    if "holidays" in values:
        values["holidays"] = sorted(set(values["holidays"]))
    merged = {**current, **values}
    build_calendar(merged["timezone"], merged["weekly"], merged["holidays"])
    changed = [k for k, v in values.items() if current[k] != v]
    if not changed:
        return current
    row = await _one(
        session,
        "UPDATE business_hours SET name = :name, timezone = :tz, weekly = CAST(:weekly AS jsonb), "
        "holidays = :holidays, updated_at = :now, version = version + 1 "
        f"WHERE tenant_id = :t AND id = :id RETURNING {BH_COLS}",
        name=merged["name"],
        tz=merged["timezone"],
        weekly=json.dumps(merged["weekly"]),
        holidays=merged["holidays"],
        now=_now(),
        t=caller.tenant,
        id=bh_id,
    )
    assert row
    _emit(
        caller,
        session,
        pb.BusinessHoursUpdated(business_hours=events.business_hours_message(row)),
        row,
        changed,
    )
    return row


async def delete_business_hours(
    session: AsyncSession, caller: Caller, bh_id: uuid.UUID, if_match: str | None
) -> None:
    caller.require_admin()
    current = await get_business_hours(session, caller.tenant, bh_id, lock=True)
    check_if_match(if_match, current["version"])
    used = await _one(
        session,
        "SELECT id FROM sla_policies WHERE tenant_id = :t AND business_hours_id = :id "
        "AND deleted_at IS NULL LIMIT 1",
        t=caller.tenant,
        id=bh_id,
    )
    if used:
        raise invalid("id", f"used by SLA policy {used['id']}; change that policy first")
    await _soft_delete(session, caller, "business_hours", bh_id, pb.BusinessHoursDeleted())


# --- SLA policies ----------------------------------------------------------------------------

POLICY_COLS = (
    "id, name, position, business_hours_id, conditions, targets, warning_minutes, "
    "created_at, updated_at, version"
)


def _targets_json(targets: Mapping[Any, Targets]) -> str:
    return json.dumps({p: t.model_dump() for p, t in targets.items()})


def _conditions_json(conditions: Any) -> str:
    return json.dumps(conditions.model_dump(mode="json", exclude_none=True))


async def get_policy(
    session: AsyncSession, tenant: str, policy_id: uuid.UUID, lock: bool = False
) -> Row:
    row = await _one(
        session,
        f"SELECT {POLICY_COLS} FROM sla_policies WHERE tenant_id = :t AND id = :id "
        "AND deleted_at IS NULL" + (" FOR UPDATE" if lock else ""),
        t=tenant,
        id=policy_id,
    )
    if row is None:
        raise PolicyNotFound(f"no SLA policy {policy_id}")
    return row


async def list_policies(session: AsyncSession, tenant: str) -> list[Row]:
    """In evaluation order: position, then creation."""
    return await _all(
        session,
        f"SELECT {POLICY_COLS} FROM sla_policies WHERE tenant_id = :t AND deleted_at IS NULL "
        "ORDER BY position, created_at, id",
        t=tenant,
    )


async def _check_bh(session: AsyncSession, tenant: str, bh_id: uuid.UUID | None) -> None:
    if bh_id is None:
        return
    try:
        await get_business_hours(session, tenant, bh_id)
    except BusinessHoursNotFound:
        raise invalid("business_hours_id", "no such business hours") from None


async def create_policy(session: AsyncSession, caller: Caller, body: SlaPolicyIn) -> Row:
    caller.require_admin()
    await _check_bh(session, caller.tenant, body.business_hours_id)
    now = _now()
    row = await _one(
        session,
        "INSERT INTO sla_policies (tenant_id, id, name, position, business_hours_id, conditions, "
        "targets, warning_minutes, created_at, updated_at, version) VALUES (:t, :id, :name, :pos, "
        ":bh, CAST(:cond AS jsonb), CAST(:targets AS jsonb), :warn, :now, :now, 1) "
        f"RETURNING {POLICY_COLS}",
        t=caller.tenant,
        id=uuid.uuid4(),
        name=body.name,
        pos=body.position,
        bh=body.business_hours_id,
        cond=_conditions_json(body.conditions),
        targets=_targets_json(body.targets),
        warn=body.warning_minutes,
        now=now,
    )
    assert row
    _emit(caller, session, pb.SlaPolicyCreated(policy=events.policy_message(row)), row)
    return row


async def update_policy(
    session: AsyncSession,
    caller: Caller,
    policy_id: uuid.UUID,
    patch: SlaPolicyPatch,
    if_match: str | None,
) -> Row:
    caller.require_admin()
    current = await get_policy(session, caller.tenant, policy_id, lock=True)
    check_if_match(if_match, current["version"])
    sent = patch.model_fields_set
    if "business_hours_id" in sent:
        await _check_bh(session, caller.tenant, patch.business_hours_id)
    merged = dict(current)
    if patch.name is not None:
        merged["name"] = patch.name
    if patch.position is not None:
        merged["position"] = patch.position
    if "business_hours_id" in sent:
        merged["business_hours_id"] = patch.business_hours_id
    if patch.conditions is not None:
        merged["conditions"] = json.loads(_conditions_json(patch.conditions))
    if patch.targets is not None:
        merged["targets"] = json.loads(_targets_json(patch.targets))
    if "warning_minutes" in sent:
        merged["warning_minutes"] = patch.warning_minutes
    changed = [k for k in merged if merged[k] != current[k]]
    if not changed:
        return current
    row = await _one(
        session,
        "UPDATE sla_policies SET name = :name, position = :pos, business_hours_id = :bh, "
        "conditions = CAST(:cond AS jsonb), targets = CAST(:targets AS jsonb), "
        "warning_minutes = :warn, updated_at = :now, version = version + 1 "
        f"WHERE tenant_id = :t AND id = :id RETURNING {POLICY_COLS}",
        name=merged["name"],
        pos=merged["position"],
        bh=merged["business_hours_id"],
        cond=json.dumps(merged["conditions"]),
        targets=json.dumps(merged["targets"]),
        warn=merged["warning_minutes"],
        now=_now(),
        t=caller.tenant,
        id=policy_id,
    )
    assert row
    _emit(caller, session, pb.SlaPolicyUpdated(policy=events.policy_message(row)), row, changed)
    return row


async def delete_policy(
    session: AsyncSession, caller: Caller, policy_id: uuid.UUID, if_match: str | None
) -> None:
    caller.require_admin()
    current = await get_policy(session, caller.tenant, policy_id, lock=True)
    check_if_match(if_match, current["version"])
    await _soft_delete(session, caller, "sla_policies", policy_id, pb.SlaPolicyDeleted())
