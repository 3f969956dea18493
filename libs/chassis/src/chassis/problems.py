"""RFC 9457 problem+json: one error base class, a subclass per condition, one handler each."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("chassis.problems")

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """An expected failure that becomes a problem+json response."""

    status: int = 400
    title: str = "Bad request"
    type: str = "about:blank"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extra = extra

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class NotFound(ProblemError):
    status, title = 404, "Not found"


class Forbidden(ProblemError):
    status, title = 403, "Forbidden"


class Unauthorized(ProblemError):
    status, title = 401, "Unauthorized"


class Conflict(ProblemError):
    status, title = 409, "Conflict"


class Unprocessable(ProblemError):
    status, title = 422, "Unprocessable content"


class PreconditionFailed(ProblemError):
    status, title = 412, "Precondition failed"


class PreconditionRequired(ProblemError):
    status, title = 428, "Precondition required"


class TooManyRequests(ProblemError):
    status, title = 429, "Too many requests"


class BadGateway(ProblemError):
    status, title = 502, "Bad gateway"


class ServiceUnavailable(ProblemError):
    status, title = 503, "Service unavailable"


def invalid(field: str | list[str | int], message: str) -> Unprocessable:
    """A 422 naming one failing field path, shaped like request validation errors."""
    path = field if isinstance(field, list) else field.split(".")
    return Unprocessable(
        f"{'.'.join(str(p) for p in path)}: {message}",
        errors=[{"path": path, "message": message}],
    )


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(
        exc.to_dict(request.url.path),
        status_code=exc.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"path": [p for p in e.get("loc", ()) if p != "body"], "message": e.get("msg", "")}
        for e in exc.errors()
    ]
    detail = "; ".join(
        f"{'.'.join(str(p) for p in e['path']) or 'body'}: {e['message']}" for e in errors
    )
    body = {
        "type": "about:blank",
        "title": "Unprocessable content",
        "status": 422,
        "detail": detail,
        "instance": request.url.path,
        "errors": errors,
    }
    return JSONResponse(body, status_code=422, media_type=PROBLEM_JSON)


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {
        404: "Not found",
        405: "Method not allowed",
        413: "Content too large",
        401: "Unauthorized",
        403: "Forbidden",
    }
    body = {
        "type": "about:blank",
        "title": titles.get(exc.status_code, "Error"),
        "status": exc.status_code,
        "detail": str(exc.detail),
        "instance": request.url.path,
    }
    return JSONResponse(
        body,
        status_code=exc.status_code,
        media_type=PROBLEM_JSON,
        headers=getattr(exc, "headers", None),
    )


def _is_unique_violation(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlstate", None) == "23505":  # asyncpg UniqueViolationError
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


async def _integrity_handler(request: Request, exc: Exception) -> JSONResponse:
    """A uniqueness violation that domain validation did not foresee is a race with a
    concurrent write of the same key (two ERP batches creating one external id): a 409 the
    client can retry, not a 500."""
    if not _is_unique_violation(exc):
        return await _unhandled(request, exc)
    body = {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "a concurrent request wrote the same unique key; retry the request",
        "instance": request.url.path,
    }
    return JSONResponse(body, status_code=409, media_type=PROBLEM_JSON)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = {
        "type": "about:blank",
        "title": "Internal server error",
        "status": 500,
        "instance": request.url.path,
    }
    return JSONResponse(body, status_code=500, media_type=PROBLEM_JSON)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(IntegrityError, _integrity_handler)
    app.add_exception_handler(asyncpg.exceptions.UniqueViolationError, _integrity_handler)
    app.add_exception_handler(Exception, _unhandled)
