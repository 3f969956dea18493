"""The caller of a request (principal, visibility scope, origin of writes) and the helpers
every engagement resource shares: deal visibility, keyset cursors, waking the scheduler."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy import event
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.auth import Principal, PrincipalDep
from chassis.db import SessionDep
from chassis.http import decode_cursor, encode_cursor
from chassis.problems import invalid
from chassis.scheduler import Scheduler
from pipeline.access import Scope, scope_of
from pipeline.engagement import repository as repo
from pipeline.engagement.events import Actor

Row = dict[str, Any]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Caller:
    principal: Principal
    scope: Scope
    origin: str
    scheduler: Scheduler | None = None

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    @property
    def sub(self) -> str:
        return self.principal.sub

    @property
    def actor(self) -> Actor:
        return Actor(self.sub, self.origin)

    async def visible_deal(self, session: AsyncSession, deal_id: uuid.UUID) -> Row | None:
        """The live deal if the caller may see it (by its owner), else None."""
        deal = await repo.live_deal(session, self.tenant, deal_id)
        if deal is None or not self.scope.sees(deal["owner_id"]):
            return None
        return deal

    async def require_deal(self, session: AsyncSession, deal_id: uuid.UUID | None) -> None:
        """A deal referenced by an activity or task must be one the caller can see."""
        if deal_id is not None and await self.visible_deal(session, deal_id) is None:
            raise invalid("deal_id", "no such deal")

    def wake_scheduler_after_commit(self, session: AsyncSession) -> None:
        """Wake the task scheduler once this unit of work has committed (not before: it would
        look before the new fire time is visible and then sleep until its next poll)."""
        scheduler = self.scheduler
        if scheduler is None:
            return

        def wake(_session: Any) -> None:
            scheduler.wake()

        event.listen(session.sync_session, "after_commit", wake, once=True)


async def get_caller(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    x_origin: Annotated[str | None, Header()] = None,
) -> Caller:
    scope = await scope_of(session, principal)
    scheduler = getattr(request.app.state, "task_scheduler", None)
    origin = (x_origin or principal.client or "")[:200]
    return Caller(principal, scope, origin, scheduler)


CallerDep = Annotated[Caller, Depends(get_caller)]


# --- keyset cursors ---------------------------------------------------------------------------


def page_cursor(rows: list[Row], limit: int, key: Callable[[Row], dict[str, Any]]) -> str | None:
    """Drop the extra row fetched past `limit`; the cursor points after the last row kept."""
    if len(rows) <= limit:
        return None
    del rows[limit:]
    return encode_cursor(key(rows[-1]))


def read_cursor(cursor: str | None, *names: str) -> dict[str, Any] | None:
    value = decode_cursor(cursor)
    if value is None:
        return None
    if not all(n in value for n in names):
        raise invalid("cursor", "not a cursor returned by this API")
    return value


def cursor_time(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as e:
        raise invalid("cursor", "not a cursor returned by this API") from e
    if parsed.tzinfo is None:
        raise invalid("cursor", "not a cursor returned by this API")
    return parsed


def cursor_id(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as e:
        raise invalid("cursor", "not a cursor returned by this API") from e
