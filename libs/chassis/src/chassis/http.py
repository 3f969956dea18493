"""HTTP conventions shared by every service: keyset pagination, ETag / If-Match optimistic
concurrency (412 stale, 428 missing), and the common list envelope."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Generic, TypeVar

from fastapi import Response
from pydantic import BaseModel

from chassis.problems import PreconditionFailed, PreconditionRequired, invalid

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """Every list endpoint answers `{"items": [...], "next_cursor": "..." | null}`."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(values: dict[str, Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise invalid("cursor", "not a cursor returned by this API") from e
    if not isinstance(value, dict):
        raise invalid("cursor", "not a cursor returned by this API")
    return value


def etag(version: int) -> str:
    return f'"{version}"'


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag(version)


def check_if_match(if_match: str | None, version: int) -> None:
    """Optimistic concurrency: the client must send the ETag it read (428 when missing, 412
    when another write happened since)."""
    if if_match is None or not if_match.strip():
        raise PreconditionRequired("send If-Match with the ETag of the version you read")
    if if_match.strip() == "*":
        return
    tags = {t.strip().removeprefix("W/") for t in if_match.split(",")}
    if etag(version) not in tags:
        raise PreconditionFailed(
            "the resource changed since you read it; fetch it again",
            current_etag=etag(version),
        )
