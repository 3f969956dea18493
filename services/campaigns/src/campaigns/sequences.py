"""Nurture sequences: steps run per enrolled contact on a durable timer (chassis.scheduler).

Steps: send_email {template_id}; wait {days|hours|minutes|seconds}; branch {if, then,
else} where `if` is {"opened": true} / {"clicked": true} (the previous email of this
enrollment), {"score": {"model", "gte"}} or {"segment_id"}, and then/else are step indexes
(len(steps) ends the sequence); add_tag {tag} and create_task {title, due_in_days, priority}
(events the contacts / pipeline services apply); exit.

Enrollment: manual (POST .../enrollments), on entering a segment (trigger
{"type": "segment", "segment_id"}, checked whenever the replica sees the contact change, and
for every member when the sequence is created), or on an event (trigger {"type": "event",
"event": "contact.created", "tag"?} or {"type": "event", "event": "touchpoint.recorded",
"channel"?}). A contact is in a sequence at most once at a time (unique index over active
enrollments); a trigger enrolls a contact only once ever. Enrollments exit on unsubscribe,
erasure, deletion, merge, or a reply (an email_reply touchpoint).

Each run of the timer claims due enrollments (FOR UPDATE SKIP LOCKED), executes steps until
a wait or the end (at most 50 steps per run against goto loops), and writes the new position
with one version bump and one `enrollment.changed` event; emails go through the sender's
delivery rows (unique per enrollment and step), so a retried run never sends twice."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns import scoring, segments, templates
from campaigns.common import (
    Actor,
    ActorDep,
    ResourceNotFound,
    Row,
    emit,
    list_value,
    now,
    one,
    rows,
    struct,
)
from campaigns.filters import ACTIVE
from campaigns.resources import Table
from campaigns.sending import ELIGIBLE
from chassis.db import Database, SessionDep
from chassis.http import Page, check_if_match, decode_cursor, encode_cursor, set_etag
from chassis.problems import Conflict, invalid
from chassis.scheduler import Scheduler
from crm.campaigns.v1 import campaigns_pb2 as pb

MAX_STEPS_PER_RUN = 50
STEP_TYPES = ("send_email", "wait", "branch", "add_tag", "create_task", "exit")
CHANNELS = ("web_form", "chat", "social", "site_visit", "email_reply", "phone")


class SequenceIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Onboarding"])
    steps: list[dict[str, Any]] = Field(min_length=1, max_length=100)
    trigger: dict[str, Any] = Field(
        default_factory=lambda: {"type": "manual"},
        examples=[{"type": "segment", "segment_id": "..."}],
    )


class SequencePatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    steps: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=100)


class SequencePublic(BaseModel):
    id: uuid.UUID
    name: str
    steps: list[dict[str, Any]]
    trigger: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int


class EnrollIn(BaseModel):
    contact_id: uuid.UUID


class EnrollmentPublic(BaseModel):
    id: uuid.UUID
    sequence_id: uuid.UUID
    contact_id: uuid.UUID
    step: int
    step_type: str | None
    status: str
    exit_reason: str | None
    next_run_at: datetime | None
    enrolled_at: datetime
    updated_at: datetime
    version: int


def _msg(change: str, row: Row) -> pb.SequenceChanged:
    return pb.SequenceChanged(
        change=change,
        sequence=pb.Sequence(
            id=str(row["id"]),
            name=row["name"],
            steps=list_value(row["steps"]),
            trigger=struct(row["trigger"]),
            version=row["version"],
        ),
    )


TABLE = Table(
    "sequences", "sequence", ("name", "steps", "trigger"), _msg, json_columns=("steps", "trigger")
)


def wait_seconds(step: dict[str, Any]) -> float:
    units = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
    return float(sum(float(step.get(k, 0)) * v for k, v in units.items()))


async def validate(
    session: AsyncSession, tenant: str, steps: list[dict[str, Any]], trigger: dict[str, Any] | None
) -> None:
    n = len(steps)
    for i, step in enumerate(steps):
        path: list[str | int] = ["steps", i]
        kind = step.get("type")
        if kind not in STEP_TYPES:
            raise invalid(
                [*path, "type"], f"unknown step type {kind!r}; one of {', '.join(STEP_TYPES)}"
            )
        if kind == "send_email":
            try:
                await templates.TABLE.get(session, tenant, uuid.UUID(str(step.get("template_id"))))
            except (ValueError, ResourceNotFound) as e:
                raise invalid([*path, "template_id"], "unknown email template") from e
        elif kind == "wait":
            try:
                total = wait_seconds(step)
            except (TypeError, ValueError) as e:
                raise invalid(path, "days/hours/minutes/seconds must be numbers") from e
            if not 0 < total <= 366 * 86400:
                raise invalid(path, "a wait needs a duration between 1 second and a year")
        elif kind == "branch":
            cond = step.get("if")
            if (
                not isinstance(cond, dict)
                or len(cond) != 1
                or next(iter(cond)) not in ("opened", "clicked", "score", "segment_id")
            ):
                raise invalid(
                    [*path, "if"],
                    'one of {"opened": true}, {"clicked": true}, '
                    '{"score": {"model", "gte"}}, {"segment_id"}',
                )
            if "score" in cond:
                score = cond["score"]
                models = await segments.score_models(session, tenant)
                if (
                    not isinstance(score, dict)
                    or str(score.get("model")) not in models
                    or not isinstance(score.get("gte"), (int, float))
                ):
                    raise invalid([*path, "if", "score"], "needs a known model and a number gte")
            if "segment_id" in cond:
                try:
                    await segments.get(session, tenant, uuid.UUID(str(cond["segment_id"])))
                except (ValueError, ResourceNotFound) as e:
                    raise invalid([*path, "if", "segment_id"], "unknown segment") from e
            for key in ("then", "else"):
                target = step.get(key, i + 1)
                if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= n:
                    raise invalid([*path, key], f"must be a step index between 0 and {n}")
        elif kind == "add_tag":
            if not isinstance(step.get("tag"), str) or not step["tag"].strip():
                raise invalid([*path, "tag"], "required")
        elif kind == "create_task":
            if not isinstance(step.get("title"), str) or not step["title"].strip():
                raise invalid([*path, "title"], "required")
            if step.get("priority", "normal") not in ("low", "normal", "high"):
                raise invalid([*path, "priority"], "low, normal or high")
            due = step.get("due_in_days", 0)
            if isinstance(due, bool) or not isinstance(due, (int, float)) or not 0 <= due <= 3650:
                raise invalid([*path, "due_in_days"], "a number of days between 0 and 3650")
    if trigger is None:
        return
    kind = trigger.get("type")
    if kind == "manual":
        return
    if kind == "segment":
        try:
            await segments.get(session, tenant, uuid.UUID(str(trigger.get("segment_id"))))
        except (ValueError, ResourceNotFound) as e:
            raise invalid(["trigger", "segment_id"], "unknown segment") from e
        return
    if kind == "event":
        event = trigger.get("event")
        if event == "contact.created":
            if "tag" in trigger and not isinstance(trigger["tag"], str):
                raise invalid(["trigger", "tag"], "must be a string")
            return
        if event == "touchpoint.recorded":
            if "channel" in trigger and trigger["channel"] not in CHANNELS:
                raise invalid(["trigger", "channel"], f"one of {', '.join(CHANNELS)}")
            return
        raise invalid(["trigger", "event"], "contact.created or touchpoint.recorded")
    raise invalid(["trigger", "type"], "manual, segment or event")


def _enrollment_msg(row: Row) -> pb.Enrollment:
    return pb.Enrollment(
        id=str(row["id"]),
        sequence_id=str(row["sequence_id"]),
        contact_id=str(row["contact_id"]),
        step=row["step"],
        status=row["status"],
        exit_reason=row["exit_reason"] or "",
        version=row["version"],
    )


def _actor(tenant: str) -> Actor:
    return Actor(tenant, "system:sequences", "crm/campaigns:sequences")


async def enroll(
    session: AsyncSession,
    actor: Actor,
    sequence: Row,
    contact_ids: list[uuid.UUID],
    *,
    once_ever: bool,
) -> list[Row]:
    """Enroll contacts (set-based); skips contacts active in it, and with `once_ever` those
    ever enrolled."""
    if not contact_ids:
        return []
    at = now()
    created = await rows(
        session,
        "INSERT INTO enrollments (tenant_id, id, sequence_id, contact_id, step, status, "
        "next_run_at, "
        "enrolled_at, updated_at, version) SELECT :t, gen_random_uuid(), :s, c, 0, 'active', :now, "
        ":now, "
        ":now, 1 FROM unnest(CAST(:cs AS uuid[])) AS c WHERE NOT CAST(:once AS boolean) OR NOT "
        "EXISTS "
        "(SELECT 1 FROM enrollments e WHERE e.tenant_id = :t AND e.sequence_id = :s AND "
        "e.contact_id = c) "
        "ON CONFLICT (tenant_id, sequence_id, contact_id) WHERE status = 'active' DO NOTHING "
        "RETURNING *",
        {"t": actor.tenant, "s": sequence["id"], "cs": contact_ids, "now": at, "once": once_ever},
    )
    for row in created:
        emit(
            session,
            actor,
            pb.EnrollmentChanged(change="enrolled", enrollment=_enrollment_msg(row)),
            row["id"],
            1,
        )
    return created


async def exit_contact(
    session: AsyncSession, tenant: str, contact_id: uuid.UUID, reason: str
) -> None:
    exited = await rows(
        session,
        "UPDATE enrollments SET status = 'exited', exit_reason = :r, next_run_at = NULL, "
        "updated_at = :now, "
        "version = version + 1 WHERE tenant_id = :t AND contact_id = :c AND status = 'active' "
        "RETURNING *",
        {"t": tenant, "c": contact_id, "r": reason, "now": now()},
    )
    for row in exited:
        emit(
            session,
            _actor(tenant),
            pb.EnrollmentChanged(change="exited", enrollment=_enrollment_msg(row)),
            row["id"],
            row["version"],
        )


async def _triggered(session: AsyncSession, tenant: str, kind: str) -> list[Row]:
    return await rows(
        session,
        "SELECT * FROM sequences WHERE tenant_id = :t AND deleted_at IS NULL AND trigger ->> "
        "'type' = :k",
        {"t": tenant, "k": kind},
    )


async def on_contact_changed(
    session: AsyncSession, tenant: str, contact: Row, created: bool
) -> None:
    for sequence in await _triggered(session, tenant, "segment"):
        segment = await one(
            session,
            "SELECT * FROM segments WHERE tenant_id = :t AND id = :i AND deleted_at IS NULL",
            {"t": tenant, "i": uuid.UUID(sequence["trigger"]["segment_id"])},
        )
        if segment is not None and await segments.contains(session, segment, contact["id"]):
            await enroll(session, _actor(tenant), sequence, [contact["id"]], once_ever=True)
    if created:
        for sequence in await _triggered(session, tenant, "event"):
            trig = sequence["trigger"]
            if trig.get("event") == "contact.created" and (
                not trig.get("tag") or trig["tag"] in (contact["tags"] or [])
            ):
                await enroll(session, _actor(tenant), sequence, [contact["id"]], once_ever=True)


async def on_touchpoint(
    session: AsyncSession, tenant: str, contact_id: uuid.UUID, channel: str
) -> None:
    if channel == "email_reply":
        await exit_contact(session, tenant, contact_id, "replied")
        return
    for sequence in await _triggered(session, tenant, "event"):
        trig = sequence["trigger"]
        if trig.get("event") == "touchpoint.recorded" and trig.get("channel") in (None, channel):
            await enroll(session, _actor(tenant), sequence, [contact_id], once_ever=True)


# --- the runner -------------------------------------------------------------------------------


async def _branch(session: AsyncSession, e: Row, cond: dict[str, Any]) -> bool:
    tenant = e["tenant_id"]
    if "opened" in cond or "clicked" in cond:
        if e["last_delivery_id"] is None:
            return False
        column = "first_opened_at" if "opened" in cond else "first_clicked_at"
        d = await one(
            session,
            f"SELECT {column} IS NOT NULL AS hit FROM deliveries WHERE tenant_id = :t AND id = :i",
            {"t": tenant, "i": e["last_delivery_id"]},
        )
        return bool(d and d["hit"]) == bool(cond.get("opened", cond.get("clicked")))
    if "score" in cond:
        value = await scoring.score_value(
            session, tenant, str(cond["score"]["model"]), e["contact_id"]
        )
        return value >= float(cond["score"]["gte"])
    segment = await one(
        session,
        "SELECT * FROM segments WHERE tenant_id = :t AND id = :i AND deleted_at IS NULL",
        {"t": tenant, "i": uuid.UUID(str(cond["segment_id"]))},
    )
    return segment is not None and await segments.contains(session, segment, e["contact_id"])


async def advance(session: AsyncSession, e: Row, steps: list[dict[str, Any]], at: datetime) -> None:
    tenant = e["tenant_id"]
    actor = _actor(tenant)
    step, status, reason = e["step"], "active", None
    next_run: datetime | None = None
    last_delivery = e["last_delivery_id"]
    for _ in range(MAX_STEPS_PER_RUN):
        if step >= len(steps):
            status = "completed"
            break
        s = steps[step]
        kind = s["type"]
        if kind == "send_email":
            contact = await one(
                session,
                f"SELECT c.*, ({ELIGIBLE}) AS eligible FROM contacts c WHERE c.tenant_id = :t AND "
                f"c.id = :i AND {ACTIVE}",
                {"t": tenant, "i": e["contact_id"]},
            )
            if contact is not None and contact["eligible"]:
                d = await one(
                    session,
                    "INSERT INTO deliveries (tenant_id, id, enrollment_id, step, sequence_id, "
                    "template_id, contact_id, "
                    "email, status, next_attempt_at, created_at) VALUES (:t, gen_random_uuid(), "
                    ":e, :s, :seq, :tpl, :c, "
                    ":email, 'pending', :now, :now) ON CONFLICT (tenant_id, enrollment_id, step) "
                    "WHERE enrollment_id IS NOT NULL "
                    "DO UPDATE SET step = EXCLUDED.step RETURNING id",
                    {
                        "t": tenant,
                        "e": e["id"],
                        "s": step,
                        "seq": e["sequence_id"],
                        "tpl": uuid.UUID(str(s["template_id"])),
                        "c": e["contact_id"],
                        "email": contact["email"],
                        "now": at,
                    },
                )
                last_delivery = d["id"] if d else last_delivery
            step += 1
        elif kind == "wait":
            # Sleep, then resume at the next step: `step` already points past the wait.
            next_run = at + timedelta(seconds=wait_seconds(s))
            step += 1
            break
        elif kind == "branch":
            step = (
                s.get("then", step + 1)
                if await _branch(session, {**e, "last_delivery_id": last_delivery}, s["if"])
                else s.get("else", step + 1)
            )
        elif kind == "add_tag":
            emit(
                session,
                actor,
                pb.ContactTagRequested(
                    contact_id=str(e["contact_id"]),
                    tag=str(s["tag"]),
                    sequence_id=str(e["sequence_id"]),
                    enrollment_id=str(e["id"]),
                ),
                uuid.uuid4(),
                1,
            )
            step += 1
        elif kind == "create_task":
            owner = await one(
                session,
                "SELECT owner_id FROM contacts WHERE tenant_id = :t AND id = :i",
                {"t": tenant, "i": e["contact_id"]},
            )
            task = pb.SequenceTaskRequested(
                contact_id=str(e["contact_id"]),
                assignee_id=(owner or {}).get("owner_id") or "",
                title=str(s["title"]),
                sequence_id=str(e["sequence_id"]),
                enrollment_id=str(e["id"]),
                priority=str(s.get("priority", "normal")),
            )
            if s.get("due_in_days"):
                task.due_at.FromDatetime(at + timedelta(days=float(s["due_in_days"])))
            emit(session, actor, task, uuid.uuid4(), 1)
            step += 1
        else:  # exit
            status, reason = "exited", "exit_step"
            break
    else:
        next_run = at + timedelta(seconds=1)  # a goto loop: let other work run, continue later
    saved = await one(
        session,
        "UPDATE enrollments SET step = :s, status = :st, exit_reason = :r, next_run_at = :n, "
        "last_delivery_id = :d, "
        "updated_at = :now, version = version + 1 WHERE tenant_id = :t AND id = :i RETURNING *",
        {
            "s": step,
            "st": status,
            "r": reason,
            "n": next_run if status == "active" else None,
            "d": last_delivery,
            "now": at,
            "t": tenant,
            "i": e["id"],
        },
    )
    assert saved is not None
    change = {"active": "advanced", "completed": "completed", "exited": "exited"}[status]
    emit(
        session,
        actor,
        pb.EnrollmentChanged(change=change, enrollment=_enrollment_msg(saved)),
        saved["id"],
        saved["version"],
    )


async def fire(session: AsyncSession, at: datetime, limit: int) -> int:
    due = await rows(
        session,
        "SELECT e.*, s.steps FROM enrollments e JOIN sequences s ON s.tenant_id = e.tenant_id AND "
        "s.id = e.sequence_id "
        "WHERE e.status = 'active' AND e.next_run_at <= :now ORDER BY e.next_run_at LIMIT :limit "
        "FOR UPDATE OF e SKIP LOCKED",
        {"now": at, "limit": limit},
    )
    for e in due:
        steps = e.pop("steps")
        await advance(session, e, steps if isinstance(steps, list) else json.loads(steps), at)
    return len(due)


async def next_due(session: AsyncSession) -> datetime | None:
    row = await one(
        session, "SELECT min(next_run_at) AS due FROM enrollments WHERE status = 'active'"
    )
    return row["due"] if row else None


def scheduler(db: Database, poll_seconds: float) -> Scheduler:
    return Scheduler("sequence-runner", db, fire, next_due=next_due, poll_seconds=poll_seconds)


# --- API --------------------------------------------------------------------------------------

router = APIRouter(prefix="/v1/sequences", tags=["sequences"])
IfMatch = Annotated[str | None, Header()]


def out(row: Row, response: Response | None = None) -> SequencePublic:
    if response is not None:
        set_etag(response, row["version"])
    return SequencePublic.model_validate(row)


@router.post("", status_code=201, response_model=SequencePublic)
async def create_sequence(
    body: SequenceIn, session: SessionDep, actor: ActorDep, response: Response
) -> SequencePublic:
    """Create a sequence; a segment trigger enrolls the segment's current members at once."""
    await validate(session, actor.tenant, body.steps, body.trigger)
    at = now()
    row = {
        **body.model_dump(),
        "tenant_id": actor.tenant,
        "id": uuid.uuid4(),
        "created_at": at,
        "updated_at": at,
        "version": 1,
    }
    saved = await TABLE.save(session, actor, row, "created")
    if body.trigger.get("type") == "segment":
        segment = await segments.get(
            session, actor.tenant, uuid.UUID(str(body.trigger["segment_id"]))
        )
        cond = await segments.condition(session, segment)
        members = await rows(
            session,
            f"SELECT c.id FROM contacts c WHERE c.tenant_id = :tenant AND {cond.sql}",
            {**cond.params, "tenant": actor.tenant},
        )
        await enroll(
            session, _actor(actor.tenant), saved, [m["id"] for m in members], once_ever=True
        )
    response.headers["Location"] = f"/v1/sequences/{saved['id']}"
    return out(saved, response)


@router.get("", response_model=Page[SequencePublic])
async def list_sequences(
    session: SessionDep,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[SequencePublic]:
    """List sequences."""
    found, nxt = await TABLE.page(session, actor.tenant, limit, cursor)
    return Page(items=[out(r) for r in found], next_cursor=nxt)


@router.get("/{sequence_id}", response_model=SequencePublic)
async def get_sequence(
    sequence_id: uuid.UUID, session: SessionDep, actor: ActorDep, response: Response
) -> SequencePublic:
    """Get a sequence."""
    return out(await TABLE.get(session, actor.tenant, sequence_id), response)


@router.patch("/{sequence_id}", response_model=SequencePublic)
async def patch_sequence(
    sequence_id: uuid.UUID,
    body: SequencePatch,
    session: SessionDep,
    actor: ActorDep,
    response: Response,
    if_match: IfMatch = None,
) -> SequencePublic:
    """Rename or change the steps (If-Match required); active enrollments keep their index."""
    row = await TABLE.get(session, actor.tenant, sequence_id, lock=True)
    check_if_match(if_match, row["version"])
    patch = body.model_dump(exclude_none=True)
    if "steps" in patch:
        await validate(session, actor.tenant, patch["steps"], None)
    changed = [k for k, v in patch.items() if row[k] != v]
    if changed:
        row.update(patch, updated_at=now(), version=row["version"] + 1)
        row = await TABLE.save(session, actor, row, "updated", changed)
    return out(row, response)


@router.delete("/{sequence_id}", status_code=204)
async def delete_sequence(
    sequence_id: uuid.UUID, session: SessionDep, actor: ActorDep, if_match: IfMatch = None
) -> None:
    """Delete a sequence (If-Match required); its active enrollments exit."""
    row = await TABLE.get(session, actor.tenant, sequence_id, lock=True)
    check_if_match(if_match, row["version"])
    exited = await rows(
        session,
        "UPDATE enrollments SET status = 'exited', exit_reason = 'sequence_deleted', next_run_at = "
        "NULL, updated_at = :now, "
        "version = version + 1 WHERE tenant_id = :t AND sequence_id = :s AND status = 'active' "
        "RETURNING *",
        {"t": actor.tenant, "s": sequence_id, "now": now()},
    )
    for e in exited:
        emit(
            session,
            actor,
            pb.EnrollmentChanged(change="exited", enrollment=_enrollment_msg(e)),
            e["id"],
            e["version"],
        )
    at = now()
    row.update(updated_at=at, deleted_at=at, version=row["version"] + 1)
    await TABLE.save(session, actor, row, "deleted")


@router.post("/{sequence_id}/enrollments", status_code=201, response_model=EnrollmentPublic)
async def enroll_contact(
    sequence_id: uuid.UUID, body: EnrollIn, session: SessionDep, actor: ActorDep
) -> EnrollmentPublic:
    """Enroll a contact by hand; 409 while the contact is active in the sequence."""
    sequence = await TABLE.get(session, actor.tenant, sequence_id)
    contact = await one(
        session,
        f"SELECT c.id FROM contacts c WHERE c.tenant_id = :t AND c.id = :i AND {ACTIVE}",
        {"t": actor.tenant, "i": body.contact_id},
    )
    if contact is None:
        raise invalid("contact_id", f"unknown contact {body.contact_id}")
    created = await enroll(session, actor, sequence, [body.contact_id], once_ever=False)
    if not created:
        raise Conflict("the contact is already active in this sequence")
    return _enrollment_out(created[0], sequence["steps"])


def _enrollment_out(row: Row, steps: list[dict[str, Any]]) -> EnrollmentPublic:
    kind = (
        steps[row["step"]]["type"]
        if row["status"] == "active" and row["step"] < len(steps)
        else None
    )
    return EnrollmentPublic.model_validate({**row, "step_type": kind})


@router.get("/{sequence_id}/enrollments", response_model=Page[EnrollmentPublic])
async def list_enrollments(
    sequence_id: uuid.UUID,
    session: SessionDep,
    actor: ActorDep,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> Page[EnrollmentPublic]:
    """Where each contact stands: step, status, exit reason, next run (keyset by id)."""
    sequence = await TABLE.get(session, actor.tenant, sequence_id)
    decoded = decode_cursor(cursor)
    try:
        after = uuid.UUID(str(decoded["id"])) if decoded else None
    except (KeyError, ValueError) as e:
        raise invalid("cursor", "not a cursor returned by this API") from e
    found = await rows(
        session,
        "SELECT * FROM enrollments WHERE tenant_id = :t AND sequence_id = :s AND (CAST(:st AS "
        "text) IS NULL OR status = :st) "
        "AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) ORDER BY id LIMIT :n",
        {"t": actor.tenant, "s": sequence_id, "st": status, "after": after, "n": limit + 1},
    )
    nxt = encode_cursor({"id": str(found[limit - 1]["id"])}) if len(found) > limit else None
    return Page(
        items=[_enrollment_out(r, sequence["steps"]) for r in found[:limit]], next_cursor=nxt
    )
