"""RFC 9457 problem+json: one error base class, a subclass per condition, one handler each."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

log = logging.getLogger("chassis.problems")

PROBLEM_JSON = "application/problem+json"
_HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"})


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
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        allow = _allowed_methods(request, (headers or {}).get("Allow", ""))
        headers = {**(headers or {}), "Allow": allow}
    return JSONResponse(body, status_code=exc.status_code, media_type=PROBLEM_JSON, headers=headers)


def _allowed_methods(request: Request, fallback: str) -> str:
    """Every method the path supports, as documented. Starlette's 405 names only the first
    route that matched the path, but a resource's GET and PATCH are separate routes
    (RFC 9110 15.5.6). `fallback` (Starlette's) for a path the document does not list."""
    path = request.scope["path"]
    # The most concrete templates win, as in OpenAPI: `/v1/contacts/batch` over
    # `/v1/contacts/{contact_id}`.
    matches: dict[int, set[str]] = {}
    for template, item in request.app.openapi().get("paths", {}).items():
        regex, _, params = compile_path(template)
        if regex.match(path):
            found = matches.setdefault(len(params), set())
            found |= {m.upper() for m in item if m.upper() in _HTTP_METHODS}
    methods = matches[min(matches)] if matches else set()
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods)) or fallback


def _sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind an error, through SQLAlchemy's and asyncpg's wrappers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str):
            return state
        current = getattr(current, "orig", None) or current.__cause__
    return None


def _is_unique_violation(exc: BaseException) -> bool:
    return _sqlstate(exc) == "23505"  # unique_violation


# Text PostgreSQL cannot store: NUL characters (22021 character_not_in_repertoire) or
# characters the database encoding lacks (22P05 untranslatable_character).
_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


async def _data_handler(request: Request, exc: Exception) -> JSONResponse:
    """Input text PostgreSQL refuses is the client's error (422), not a 500; every string
    field of every service would otherwise need its own NUL check."""
    if _sqlstate(exc) not in _UNSTORABLE_TEXT:
        return await _unhandled(request, exc)
    body = {
        "type": "about:blank",
        "title": "Unprocessable content",
        "status": 422,
        "detail": "text must not contain NUL characters",
        "instance": request.url.path,
    }
    return JSONResponse(body, status_code=422, media_type=PROBLEM_JSON)


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
    app.add_exception_handler(DBAPIError, _data_handler)
    app.add_exception_handler(asyncpg.exceptions.DataError, _data_handler)
    app.add_exception_handler(Exception, _unhandled)
