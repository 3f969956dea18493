"""Tickets, comments, status rules and routing.

Status rules: `closed` is final (any later write is 409) and reachable only from `solved`;
`new` is only an initial status; a requester comment reopens a solved ticket (-> open) and
wakes a pending one (-> open). Each fact of a write is one version of the ticket with one
event: fields -> updated, group/assignee -> assigned, status -> solved | reopened | closed |
status_changed, comment -> commented (a write that does several bumps the version once per
fact, in that order; every event carries the ticket's final state of the write, with
`ticket.version` set to that event's version).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.http import check_if_match, decode_cursor, encode_cursor
from chassis.problems import Conflict, Forbidden, NotFound, invalid
from crm.tickets.v1 import tickets_pb2 as pb
from tickets import config, events, sla, surveys
from tickets.access import Caller
from tickets.fields import ticket_fields, validate_custom_fields
from tickets.schemas import CommentIn, TicketIn, TicketPatch
from tickets.settings import TicketsSettings

Row = dict[str, Any]
OPEN_STATUSES = ("new", "open", "pending", "on_hold")
POLICY_FIELDS = ("priority", "channel", "type", "tags", "company_id")

COLS = (
    "id, subject, description, requester_contact_id, company_id, channel, priority, type, "
    "status, group_id, assignee_id, tags, custom_fields, external_ids, sla_policy_id, "
    "created_at, updated_at, solved_at, closed_at, version"
)


class TicketNotFound(NotFound):
    title = "Ticket not found"


class TicketClosed(Conflict):
    title = "Ticket closed"


class InvalidTransition(Conflict):
    title = "Invalid status change"


async def _one(session: AsyncSession, sql: str, **params: Any) -> Row | None:
    row = (await session.execute(text(sql), params)).mappings().first()
    return dict(row) if row else None


class TicketService:
    def __init__(self, session: AsyncSession, caller: Caller, settings: TicketsSettings) -> None:
        self.session = session
        self.caller = caller
        self.settings = settings

    # --- reads -------------------------------------------------------------------------------

    async def fetch(self, ticket_id: uuid.UUID, lock: bool = False) -> Row:
        if not self.caller.reads_tickets:
            raise TicketNotFound(f"no ticket {ticket_id}")
        row = await _one(
            self.session,
            f"SELECT {COLS} FROM tickets WHERE tenant_id = :t AND id = :id"
            + (" FOR UPDATE" if lock else ""),
            t=self.caller.tenant,
            id=ticket_id,
        )
        if row is None:
            raise TicketNotFound(f"no ticket {ticket_id}")
        return row

    async def view(self, row: Row, clocks: list[Row] | None = None) -> Row:
        """The ticket as the API shows it: with `sla` and `csat`."""
        if clocks is None:
            clocks = await sla.load_clocks(self.session, self.caller.tenant, [row["id"]])
        out = dict(row)
        out["sla"] = None
        if row["sla_policy_id"] is not None:
            out["sla"] = {
                "policy_id": row["sla_policy_id"],
                **{m: sla.present(sla.latest(clocks, m)) for m in sla.METRICS},
            }
        views = await surveys.csat_views(
            self.session, self.settings, self.caller.tenant, [row["id"]]
        )
        out["csat"] = views.get(row["id"])
        return out

    async def get(self, ticket_id: uuid.UUID) -> Row:
        return await self.view(await self.fetch(ticket_id))

    async def list_tickets(
        self,
        *,
        status: str | None,
        assignee_id: str | None,
        group_id: uuid.UUID | None,
        requester_contact_id: uuid.UUID | None,
        priority: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Row], str | None]:
        if not self.caller.reads_tickets:
            raise Forbidden("this role may not read tickets")
        after = decode_cursor(cursor)
        where = ["tenant_id = :t"]
        params: dict[str, Any] = {"t": self.caller.tenant, "limit": limit + 1}
        for name, value in (
            ("status", status),
            ("assignee_id", assignee_id),
            ("group_id", group_id),
            ("requester_contact_id", requester_contact_id),
            ("priority", priority),
        ):
            if value is not None:
                where.append(f"{name} = :{name}")
                params[name] = value
        if after is not None:
            try:
                params["c_at"] = datetime.fromisoformat(str(after["created_at"]))
                params["c_id"] = uuid.UUID(str(after["id"]))
            except (KeyError, ValueError):
                raise invalid("cursor", "not a cursor returned by this API") from None
            where.append("(created_at, id) > (:c_at, :c_id)")
        rows = [
            dict(r)
            for r in (
                await self.session.execute(
                    text(
                        f"SELECT {COLS} FROM tickets WHERE {' AND '.join(where)} "
                        "ORDER BY created_at, id LIMIT :limit"
                    ),
                    params,
                )
            ).mappings()
        ]
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_cursor(
                {"created_at": last["created_at"].isoformat(), "id": str(last["id"])}
            )
        clocks = await sla.load_clocks(self.session, self.caller.tenant, [r["id"] for r in rows])
        by_ticket: dict[Any, list[Row]] = {}
        for c in clocks:
            by_ticket.setdefault(c["ticket_id"], []).append(c)
        csat = await surveys.csat_views(
            self.session, self.settings, self.caller.tenant, [r["id"] for r in rows]
        )
        out = []
        for r in rows:
            v = dict(r)
            v["sla"] = (
                {
                    "policy_id": r["sla_policy_id"],
                    **{
                        m: sla.present(sla.latest(by_ticket.get(r["id"], []), m))
                        for m in sla.METRICS
                    },
                }
                if r["sla_policy_id"]
                else None
            )
            v["csat"] = csat.get(r["id"])
            out.append(v)
        return out, next_cursor

    async def comments(self, ticket_id: uuid.UUID) -> list[Row]:
        await self.fetch(ticket_id)
        public_only = "" if self.caller.is_agent else " AND public"
        rows = await self.session.execute(
            text(
                "SELECT id, ticket_id, body, public, author_type, author_id, created_at "
                f"FROM ticket_comments WHERE tenant_id = :t AND ticket_id = :id{public_only} "
                "ORDER BY created_at, id"
            ),
            {"t": self.caller.tenant, "id": ticket_id},
        )
        return [dict(r) for r in rows.mappings()]

    # --- routing -----------------------------------------------------------------------------

    async def _route(self, group_id: Any) -> tuple[str | None, str]:
        group = await config.get_group(self.session, self.caller.tenant, group_id, lock=True)
        agents: list[str] = group["agents"]
        if not agents:
            return None, group["strategy"]
        if group["strategy"] == "round_robin":
            chosen = agents[group["rr_next"] % len(agents)]
            # The round-robin cursor is routing state, not part of the group's published
            # state: it moves without a version bump or event.
            await self.session.execute(
                text("UPDATE groups SET rr_next = rr_next + 1 WHERE tenant_id = :t AND id = :id"),
                {"t": self.caller.tenant, "id": group_id},
            )
            return chosen, "round_robin"
        counts = {
            r.assignee_id: r.n
            for r in await self.session.execute(
                text(
                    "SELECT assignee_id, count(*) AS n FROM tickets WHERE tenant_id = :t "
                    "AND assignee_id = ANY(:agents) AND status IN ('new', 'open', 'pending', "
                    "'on_hold') GROUP BY assignee_id"
                ),
                {"t": self.caller.tenant, "agents": agents},
            )
        }
        chosen = min(agents, key=lambda a: (counts.get(a, 0), agents.index(a)))
        return chosen, "least_open"

    async def _check_group(self, group_id: Any) -> None:
        if group_id is None:
            return
        try:
            await config.get_group(self.session, self.caller.tenant, group_id)
        except config.GroupNotFound:
            raise invalid("group_id", "no such group") from None

    # --- writes ------------------------------------------------------------------------------

    def _emit(
        self, msg: Any, row: Row, clocks: list[Row], version: int, changed: Sequence[str] = ()
    ) -> None:
        snapshot = events.ticket_message(row, sla.current_clocks(clocks))
        snapshot.version = version
        msg.ticket.CopyFrom(snapshot)
        events.emit(
            self.session,
            msg,
            tenant=self.caller.tenant,
            aggregate_id=row["id"],
            version=version,
            actor=self.caller.sub,
            origin=self.caller.origin,
            occurred_at=row["updated_at"],
            changed=changed,
        )

    async def create(self, body: TicketIn) -> Row:
        self.caller.require_ticket_writer()
        await self._check_group(body.group_id)
        specs = await ticket_fields(self.session, self.caller.tenant)
        custom = validate_custom_fields(body.custom_fields, specs)
        now = datetime.now(UTC)
        assignee = body.assignee_id
        if assignee is None and body.group_id is not None:
            assignee, _ = await self._route(body.group_id)
        row: Row = {
            **body.model_dump(),
            "id": uuid.uuid4(),
            "assignee_id": assignee,
            "tags": list(dict.fromkeys(body.tags)),
            "custom_fields": custom,
            "created_at": now,
            "updated_at": now,
            "solved_at": None,
            "closed_at": None,
            "version": 1,
        }
        policy = await sla.match_policy(self.session, self.caller.tenant, row)
        row["sla_policy_id"] = policy["id"] if policy else None
        await self.session.execute(
            text(
                "INSERT INTO tickets (tenant_id, id, subject, description, requester_contact_id, "
                "company_id, channel, priority, type, status, group_id, assignee_id, tags, "
                "custom_fields, external_ids, sla_policy_id, created_by, created_at, updated_at, "
                "version) VALUES (:t, :id, :subject, :description, :requester_contact_id, "
                ":company_id, :channel, :priority, :type, :status, :group_id, :assignee_id, "
                ":tags, CAST(:cf AS jsonb), CAST(:ext AS jsonb), :sla_policy_id, :by, "
                ":created_at, :updated_at, 1)"
            ),
            {
                **row,
                "t": self.caller.tenant,
                "cf": json.dumps(custom),
                "ext": json.dumps(body.external_ids),
                "by": self.caller.sub,
            },
        )
        clocks = sla.TicketClocks(
            self.session,
            self.caller.tenant,
            row,
            [],
            self.settings.sla_warning_minutes,
            self.caller.origin,
        )
        if policy is not None:
            await clocks.start(policy, "first_response", now)
            await clocks.start(policy, "resolution", now)
            await clocks.save()
        self._emit(pb.TicketCreated(), row, clocks.clocks, 1)
        return await self.view(row, clocks.clocks)

    async def upsert_by_external_id(
        self, system: str, external_id: str, body: TicketIn
    ) -> tuple[Row, bool]:
        """Idempotent upsert for sync jobs: create, or apply the fields sent to the one ticket
        carrying this external id (409 when several do). Returns (ticket, created)."""
        self.caller.require_ticket_writer()
        # Serialize writers of the same key so two concurrent PUTs cannot both create.
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"tickets:{self.caller.tenant}:{system}:{external_id}"},
        )
        rows = (
            await self.session.execute(
                text(
                    "SELECT id FROM tickets WHERE tenant_id = :t "
                    "AND external_ids @> CAST(:probe AS jsonb) LIMIT 2"
                ),
                {"t": self.caller.tenant, "probe": json.dumps({system: external_id})},
            )
        ).all()
        if len(rows) > 1:
            raise Conflict(f"several tickets carry the external id {system}/{external_id}")
        ids = {**body.external_ids, system: external_id}
        if not rows:
            return await self.create(body.model_copy(update={"external_ids": ids})), True
        sent = {k: getattr(body, k) for k in body.model_fields_set if k != "external_ids"}
        current = await self.fetch(rows[0].id)
        sent["external_ids"] = {**current["external_ids"], **ids}
        if sent.get("status") == current["status"]:
            sent.pop("status")
        patch = TicketPatch.model_validate(sent)
        return await self.update(rows[0].id, patch, "*"), False

    async def update(self, ticket_id: uuid.UUID, patch: TicketPatch, if_match: str | None) -> Row:
        self.caller.require_ticket_writer()
        current = await self.fetch(ticket_id, lock=True)
        check_if_match(if_match, current["version"])
        if current["status"] == "closed":
            raise TicketClosed("a closed ticket cannot change")
        values = patch.model_dump(exclude_unset=True)
        for key in (
            "subject",
            "channel",
            "priority",
            "type",
            "status",
            "tags",
            "custom_fields",
            "external_ids",
        ):
            if key in values and values[key] is None:
                raise invalid(key, "may not be null")
        if "tags" in values:
            values["tags"] = list(dict.fromkeys(values["tags"]))
        if "custom_fields" in values:
            specs = await ticket_fields(self.session, self.caller.tenant)
            values["custom_fields"] = validate_custom_fields(
                values["custom_fields"], specs, current["custom_fields"]
            )
        if "group_id" in values:
            await self._check_group(values["group_id"])
        new = {**current, **values}
        route_method = "manual"
        if (
            "group_id" in values
            and values["group_id"] is not None
            and values["group_id"] != current["group_id"]
            and "assignee_id" not in values
        ):
            new["assignee_id"], route_method = await self._route(values["group_id"])
        changed = [k for k in new if new[k] != current[k]]
        if not changed:
            return await self.view(current)
        old_status, new_status = current["status"], new["status"]
        if new_status != old_status:
            if new_status == "new":
                raise invalid("status", "a ticket cannot go back to new")
            if new_status == "closed" and old_status != "solved":
                raise InvalidTransition("only a solved ticket can be closed")
        now = datetime.now(UTC)
        new["updated_at"] = now
        if new_status == "solved" and old_status != "solved":
            new["solved_at"] = now
        elif new_status in OPEN_STATUSES:
            new["solved_at"] = None
        if new_status == "closed":
            new["closed_at"] = now
        field_changes = [k for k in changed if k not in ("status", "group_id", "assignee_id")]
        assign_changes = [k for k in changed if k in ("group_id", "assignee_id")]
        status_change = "status" in changed
        version = current["version"]
        version += bool(field_changes) + bool(assign_changes) + bool(status_change)
        new["version"] = version
        # policy and clocks
        clocks = await sla.TicketClocks.load(
            self.session,
            self.caller.tenant,
            new,
            self.settings.sla_warning_minutes,
            self.caller.origin,
        )
        if any(k in changed for k in POLICY_FIELDS):
            policy = await sla.match_policy(self.session, self.caller.tenant, new)
            new["sla_policy_id"] = policy["id"] if policy else None
            await clocks.retarget(policy, now)
            if policy is not None:
                await self._start_missing(clocks, policy, current)
        await self._apply_status(clocks, old_status, new_status, now)
        await self.session.execute(
            text(
                "UPDATE tickets SET subject = :subject, description = :description, "
                "requester_contact_id = :requester_contact_id, company_id = :company_id, "
                "channel = :channel, priority = :priority, type = :type, status = :status, "
                "group_id = :group_id, assignee_id = :assignee_id, tags = :tags, "
                "custom_fields = CAST(:cf AS jsonb), external_ids = CAST(:ext AS jsonb), "
                "sla_policy_id = :sla_policy_id, updated_at = :updated_at, solved_at = :solved_at, "
                "closed_at = :closed_at, version = :version WHERE tenant_id = :t AND id = :id"
            ),
            {
                **new,
                "t": self.caller.tenant,
                "cf": json.dumps(new["custom_fields"]),
                "ext": json.dumps(new["external_ids"]),
            },
        )
        await clocks.save()
        v = current["version"]
        if field_changes:
            v += 1
            self._emit(pb.TicketUpdated(), new, clocks.clocks, v, field_changes)
        if assign_changes:
            v += 1
            self._emit(
                pb.TicketAssigned(
                    from_assignee_id=events.s(current["assignee_id"]),
                    to_assignee_id=events.s(new["assignee_id"]),
                    method=route_method if "assignee_id" not in values else "manual",
                ),
                new,
                clocks.clocks,
                v,
                assign_changes,
            )
        if status_change:
            v += 1
            self._emit(
                self._status_event(old_status, new_status), new, clocks.clocks, v, ["status"]
            )
        if new_status == "solved" and old_status != "solved":
            await surveys.request_csat(self.session, self.settings, self.caller, new, now)
        return await self.view(new, clocks.clocks)

    async def _start_missing(self, clocks: sla.TicketClocks, policy: Row, current: Row) -> None:
        """A policy newly applies: clocks of metrics never started count from the ticket's
        creation (pauses before now are not known and not subtracted)."""
        started = {c["metric"] for c in clocks.clocks}
        if "first_response" not in started and current["status"] in OPEN_STATUSES:
            replied = await _one(
                self.session,
                "SELECT 1 AS x FROM ticket_comments WHERE tenant_id = :t AND ticket_id = :id "
                "AND author_type = 'agent' AND public LIMIT 1",
                t=self.caller.tenant,
                id=current["id"],
            )
            if replied is None:
                await clocks.start(policy, "first_response", current["created_at"])
        if "resolution" not in started and current["status"] in OPEN_STATUSES:
            await clocks.start(policy, "resolution", current["created_at"])

    @staticmethod
    def _status_event(old: str, new: str) -> Any:
        if new == "solved":
            return pb.TicketSolved(from_status=old)
        if new == "closed":
            return pb.TicketClosed(from_status=old)
        if old == "solved":
            return pb.TicketReopened(from_status=old)
        return pb.TicketStatusChanged(from_status=old, to_status=new)

    @staticmethod
    async def _apply_status(clocks: sla.TicketClocks, old: str, new: str, now: datetime) -> None:
        if old == new:
            return
        if new == "solved":
            await clocks.fulfill("resolution", now)
            await clocks.stop(now, ("first_response", "next_response"))
        elif new == "closed":
            await clocks.stop(now)
        elif old == "solved":
            await clocks.reopen_resolution(now)
            if new in sla.PAUSED:
                await clocks.pause(now)
        elif new in sla.PAUSED:
            await clocks.pause(now)
        else:
            await clocks.resume(now)

    async def comment(self, ticket_id: uuid.UUID, body: CommentIn) -> tuple[Row, Row]:
        self.caller.require_ticket_writer()
        current = await self.fetch(ticket_id, lock=True)
        if current["status"] == "closed":
            raise TicketClosed("a closed ticket takes no comments")
        requester = body.author == "requester"
        if requester and current["requester_contact_id"] is None:
            raise invalid("author", "the ticket has no requester")
        now = datetime.now(UTC)
        comment = {
            "id": uuid.uuid4(),
            "ticket_id": ticket_id,
            "body": body.body,
            "public": True if requester else body.public,
            "author_type": body.author,
            "author_id": str(current["requester_contact_id"]) if requester else self.caller.sub,
            "created_at": now,
        }
        await self.session.execute(
            text(
                "INSERT INTO ticket_comments (tenant_id, id, ticket_id, body, public, author_type, "
                "author_id, created_at) VALUES (:t, :id, :ticket_id, :body, :public, :author_type, "
                ":author_id, :created_at)"
            ),
            {**comment, "t": self.caller.tenant},
        )
        new = dict(current)
        new["updated_at"] = now
        old_status = current["status"]
        if requester and old_status in ("solved", "pending"):
            new["status"] = "open"
            new["solved_at"] = None
        clocks = await sla.TicketClocks.load(
            self.session,
            self.caller.tenant,
            new,
            self.settings.sla_warning_minutes,
            self.caller.origin,
        )
        policy = None
        if new["sla_policy_id"] is not None:
            policy = await _one(
                self.session,
                "SELECT id, business_hours_id, targets, warning_minutes FROM sla_policies "
                "WHERE tenant_id = :t AND id = :id",
                t=self.caller.tenant,
                id=new["sla_policy_id"],
            )
        if requester:
            await self._apply_status(clocks, old_status, new["status"], now)
            if policy is not None and clocks.active("next_response") is None:
                await clocks.start(policy, "next_response", now)
        elif comment["public"]:
            await clocks.fulfill("first_response", now)
            await clocks.fulfill("next_response", now)
        status_change = new["status"] != old_status
        new["version"] = current["version"] + 1 + int(status_change)
        await self.session.execute(
            text(
                "UPDATE tickets SET status = :status, solved_at = :solved_at, updated_at = :now, "
                "version = :version WHERE tenant_id = :t AND id = :id"
            ),
            {
                "status": new["status"],
                "solved_at": new["solved_at"],
                "now": now,
                "version": new["version"],
                "t": self.caller.tenant,
                "id": ticket_id,
            },
        )
        await clocks.save()
        self._emit(
            pb.TicketCommented(comment=events.comment_message(comment)),
            new,
            clocks.clocks,
            current["version"] + 1,
        )
        if status_change:
            self._emit(
                self._status_event(old_status, new["status"]),
                new,
                clocks.clocks,
                new["version"],
                ["status"],
            )
        return comment, new
