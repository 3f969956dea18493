"""Signed tokens of the public links (itsdangerous): open pixel, click redirect, unsubscribe.
A token names the tenant and the delivery; a click token also carries its target URL, so the
redirect only ever goes where one of our emails pointed (no open redirect)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

from chassis.problems import NotFound


class InvalidToken(NotFound):
    def __init__(self) -> None:
        super().__init__("unknown or tampered link")


@dataclass(frozen=True)
class Link:
    kind: str
    tenant: str
    delivery_id: uuid.UUID
    url: str = ""


class Tokens:
    def __init__(self, secret: str, base_url: str) -> None:
        self._s = URLSafeSerializer(secret, salt="crm-campaigns-links")
        self.base = base_url.rstrip("/")

    def _dump(self, *parts: str) -> str:
        token: str = self._s.dumps(list(parts))
        return token

    def open_url(self, tenant: str, delivery_id: uuid.UUID) -> str:
        return f"{self.base}/v1/public/t/o/{self._dump('o', tenant, delivery_id.hex)}"

    def click_url(self, tenant: str, delivery_id: uuid.UUID, url: str) -> str:
        return f"{self.base}/v1/public/t/c/{self._dump('c', tenant, delivery_id.hex, url)}"

    def unsubscribe_url(self, tenant: str, delivery_id: uuid.UUID) -> str:
        return f"{self.base}/v1/public/unsubscribe/{self._dump('u', tenant, delivery_id.hex)}"

    def load(self, token: str, kind: str) -> Link:
        try:
            parts = self._s.loads(token)
        except BadSignature as e:
            raise InvalidToken() from e
        if not isinstance(parts, list) or len(parts) < 3 or parts[0] != kind:
            raise InvalidToken()
        try:
            delivery = uuid.UUID(hex=str(parts[2]))
        except ValueError as e:
            raise InvalidToken() from e
        url = str(parts[3]) if kind == "c" and len(parts) > 3 else ""
        return Link(kind, str(parts[1]), delivery, url)
