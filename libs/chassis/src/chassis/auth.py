"""JWT verification with pinned algorithms and required claims, keys from a JWKS (a file in
development, a URL in production); the `Principal` dependency and role checks."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request
from jwt import PyJWK

from chassis.problems import Forbidden, Unauthorized

ALGORITHMS = ["RS256", "ES256"]
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ROLES = frozenset(
    {
        "admin",
        "sales_manager",
        "sales_rep",
        "marketer",
        "support_agent",
        "partner",
        "erp_sync",
        "service",
    }
)


@dataclass(frozen=True)
class Principal:
    sub: str
    tenant: str
    roles: frozenset[str]
    teams: tuple[str, ...] = ()
    client: str = ""
    token: str = field(default="", repr=False)

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class KeySet:
    """The verification keys; reloaded when an unknown `kid` shows up (key rotation)."""

    def __init__(self, *, jwks_file: Path | None = None, jwks_url: str | None = None) -> None:
        self.jwks_file = jwks_file
        self.jwks_url = jwks_url
        self._keys: dict[str, PyJWK] = {}
        self._loaded_at = 0.0

    def _parse(self, doc: dict[str, Any]) -> None:
        keys: dict[str, PyJWK] = {}
        for k in doc.get("keys", []):
            if k.get("alg") in ALGORITHMS and k.get("kid"):
                keys[k["kid"]] = PyJWK(k)
        self._keys = keys
        self._loaded_at = time.monotonic()

    async def load(self) -> None:
        if self.jwks_url:
            async with httpx.AsyncClient(timeout=5) as client:
                r = await client.get(self.jwks_url)
                r.raise_for_status()
                self._parse(r.json())
        elif self.jwks_file is not None and self.jwks_file.exists():
            self._parse(json.loads(self.jwks_file.read_text()))

    async def get(self, kid: str) -> PyJWK | None:
        if kid not in self._keys and time.monotonic() - self._loaded_at > 5:
            await self.load()
        return self._keys.get(kid)


class Verifier:
    """Verifies bearer tokens. A token already verified is remembered until it expires (the
    same bytes under the same key verify the same way), which keeps RSA off the hot path."""

    CACHE_SIZE = 10_000

    def __init__(self, keys: KeySet, *, issuer: str, audience: str) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def verify(self, token: str) -> Principal:
        hit = self._cache.get(token)
        if hit is not None:
            principal, expires_at = hit
            if time.time() < expires_at:
                return principal
            del self._cache[token]
        principal, expires_at = await self._verify(token)
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = (principal, expires_at)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise Unauthorized("malformed token") from e
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Unauthorized(f"algorithm {alg!r} is not accepted")
        key = await self.keys.get(str(header.get("kid", "")))
        if key is None:
            raise Unauthorized("unknown signing key")
        if key.algorithm_name != alg:
            raise Unauthorized("token algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=5,
            )
        except jwt.PyJWTError as e:
            raise Unauthorized(f"invalid token: {e}") from e
        tenant = claims.get("tenant")
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            raise Unauthorized("token carries no valid tenant")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthorized("roles must be a list of strings")
        teams = claims.get("teams", [])
        if not isinstance(teams, list):
            raise Unauthorized("teams must be a list")
        principal = Principal(
            sub=str(claims["sub"]),
            tenant=tenant,
            roles=frozenset(roles),
            teams=tuple(str(t) for t in teams),
            client=str(claims.get("azp") or claims.get("client_id") or ""),
            token=token,
        )
        return principal, float(claims["exp"])


def bearer_token(request: Request) -> str:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token")
    return token.strip()


async def principal_dependency(request: Request) -> Principal:
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    verifier: Verifier = request.app.state.verifier
    principal = await verifier.verify(bearer_token(request))
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(principal_dependency)]


def require_roles(*roles: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that lets only `roles` (admin always) through, else 403."""

    async def check(principal: PrincipalDep) -> Principal:
        if not principal.is_admin and not principal.has(*roles):
            raise Forbidden(f"requires one of the roles: {', '.join(sorted(roles))}")
        return principal

    return check
