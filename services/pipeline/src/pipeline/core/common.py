"""What every core module shares: the caller of a request (principal, origin, visibility
scope), field errors, raw SQL helpers and keyset cursors."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Header
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.auth import Principal, PrincipalDep
from chassis.db import SessionDep
from chassis.driver import raw_connection
from chassis.http import decode_cursor, encode_cursor
from chassis.problems import Forbidden, Unprocessable, invalid
from pipeline.access import Scope, scope_of

Row = dict[str, Any]
Path = tuple[str | int, ...]
Kind = Literal["invalid", "conflict", "not_found", "precondition", "forbidden"]

# Roles that may write deals (orders, teams and pipelines have narrower rules).
DEAL_WRITERS = ("admin", "sales_manager", "sales_rep", "erp_sync", "service")
# Orders come from the ERP: only these roles write them.
ORDER_WRITERS = ("admin", "erp_sync", "service")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FieldError:
    path: Path
    message: str

    @property
    def field(self) -> str:
        return ".".join(str(p) for p in self.path)

    def as_dict(self) -> dict[str, Any]:
        return {"path": list(self.path), "message": self.message}


class ValidationFailed(Unprocessable):
    """422 listing every failing field path."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        errs = list(errors)
        super().__init__(
            "; ".join(f"{e.field or 'body'}: {e.message}" for e in errs),
            errors=[e.as_dict() for e in errs],
        )
        self.field_errors = errs


class ItemRejected(Exception):
    """One item of a write failed; `kind` picks the problem status for single writes."""

    def __init__(self, kind: Kind, errors: list[FieldError]) -> None:
        super().__init__(kind)
        self.kind = kind
        self.errors = errors


def pydantic_errors(exc: ValidationError, prefix: Path = ()) -> list[FieldError]:
    return [FieldError((*prefix, *e["loc"]), e["msg"]) for e in exc.errors()]


@dataclass
class Caller:
    """The principal of a request, the origin of its writes (X-Origin, else the token's
    client) and, computed once on demand, what it may see."""

    principal: Principal
    origin: str
    session: AsyncSession
    _scope: Scope | None = field(default=None, repr=False)

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    @property
    def sub(self) -> str:
        return self.principal.sub

    async def scope(self) -> Scope:
        if self._scope is None:
            self._scope = await scope_of(self.session, self.principal)
        return self._scope

    def require_admin(self) -> None:
        if not self.principal.is_admin:
            raise Forbidden("requires the admin role")

    def require(self, roles: Sequence[str], what: str) -> None:
        if not self.principal.has(*roles):
            raise Forbidden(f"this role may not change {what}")


async def get_caller(
    principal: PrincipalDep, session: SessionDep, x_origin: Annotated[str | None, Header()] = None
) -> Caller:
    return Caller(principal, (x_origin or principal.client or "")[:200], session)


CallerDep = Annotated[Caller, Depends(get_caller)]
IfMatch = Annotated[str | None, Header()]


# --- raw SQL on the session's connection (inside the unit of work) --------------------------


async def fetch(session: AsyncSession, sql: str, *args: Any) -> list[Row]:
    driver = await raw_connection(session)
    return [dict(r) for r in await driver.fetch(sql, *args)]


async def fetchrow(session: AsyncSession, sql: str, *args: Any) -> Row | None:
    rows = await fetch(session, sql, *args)
    return rows[0] if rows else None


async def execute(session: AsyncSession, sql: str, *args: Any) -> str:
    driver = await raw_connection(session)
    result: str = await driver.execute(sql, *args)
    return result


async def executemany(session: AsyncSession, sql: str, args: Sequence[Sequence[Any]]) -> None:
    if args:
        driver = await raw_connection(session)
        await driver.executemany(sql, args)


# --- keyset cursors ---------------------------------------------------------------------------

SORTS = ("created_at", "updated_at")


@dataclass(frozen=True)
class Sort:
    field: str
    descending: bool

    @classmethod
    def parse(cls, value: str, allowed: Sequence[str] = SORTS) -> Sort:
        name = value.removeprefix("-")
        if name not in allowed:
            raise invalid("sort", f"must be one of {', '.join(allowed)} (prefix - for descending)")
        return cls(name, value.startswith("-"))

    def after(self, cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
        data = decode_cursor(cursor)
        if data is None:
            return None
        try:
            if data["s"] != [self.field, self.descending]:
                raise invalid("cursor", "was issued for another sort order")
            return datetime.fromisoformat(data["v"]), uuid.UUID(data["id"])
        except (KeyError, TypeError, ValueError) as e:
            raise invalid("cursor", "not a cursor returned by this API") from e

    def clause(self, alias: str, first_param: int) -> str:
        """`(alias.field, alias.id) > ($n, $n+1)` (or < when descending)."""
        op = "<" if self.descending else ">"
        col = f"{alias}.{self.field}"
        return f"({col}, {alias}.id) {op} (${first_param}, ${first_param + 1})"

    def order_by(self, alias: str) -> str:
        d = " DESC" if self.descending else ""
        return f"{alias}.{self.field}{d}, {alias}.id{d}"

    def page(self, rows: list[Row], limit: int) -> tuple[list[Row], str | None]:
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        last = rows[-1]
        return rows, encode_cursor(
            {
                "s": [self.field, self.descending],
                "v": last[self.field].isoformat(),
                "id": str(last["id"]),
            }
        )


def raise_for(kind: Kind, errors: list[FieldError], what: str) -> None:
    """Turn a failed single-item write into the matching problem."""
    from chassis.problems import Conflict, NotFound, PreconditionFailed, ProblemError

    detail = "; ".join(f"{e.field or 'body'}: {e.message}" for e in errors)
    problem: ProblemError
    if kind == "conflict":
        problem = Conflict(detail, errors=[e.as_dict() for e in errors])
    elif kind == "not_found":
        problem = NotFound(f"{what} not found")
    elif kind == "precondition":
        problem = PreconditionFailed(detail)
    elif kind == "forbidden":
        problem = Forbidden(detail, errors=[e.as_dict() for e in errors])
    else:
        problem = ValidationFailed(errors)
    raise problem
