"""Who may pass the gateway: JWT verification (with a cache of verified tokens) and the
per-tenant token-bucket rate limit."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, Request

from chassis.auth import Principal, Verifier
from chassis.problems import TooManyRequests, Unauthorized


class TokenCache:
    """Remembers tokens that verified, until their `exp` (at most `ttl` seconds), so a client
    reusing its token costs one dict lookup instead of an RSA verification per request.
    Bounded: the oldest entries are dropped first."""

    def __init__(self, verifier: Verifier, *, ttl: float = 60.0, max_entries: int = 10_000
                 ) -> None:
        self.verifier = verifier
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}

    async def principal(self, token: str) -> Principal:
        hit = self._entries.get(token)
        now = time.time()
        if hit is not None:
            if hit[1] > now:
                return hit[0]
            del self._entries[token]
        principal = await self.verifier.verify(token)
        if self.ttl > 0:
            exp = jwt.decode(token, options={"verify_signature": False}).get("exp", now)
            if len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[token] = (principal, min(float(exp), now + self.ttl))
        return principal


def bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    return token.strip()


@dataclass
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int = 0

    def headers(self) -> dict[str, str]:
        h = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining)}
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after)
        return h


class RateLimiter:
    """A token bucket per tenant: `rate` tokens per second, at most `burst` saved up.

    In-process: with N gateway replicas a tenant gets up to N times the rate (put a shared
    limiter in front, or divide the rate, when that matters)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._buckets: dict[str, list[float]] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, tenant: str) -> Decision:
        now = time.monotonic()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = [float(self.burst), now]
        tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return Decision(True, self.burst, int(bucket[0]))
        bucket[0] = tokens
        return Decision(False, self.burst, 0, max(1, math.ceil((1.0 - tokens) / self.rate)))


class RateLimited(TooManyRequests):
    def __init__(self, decision: Decision) -> None:
        super().__init__(f"rate limit of the tenant exceeded; retry in {decision.retry_after}s")
        self.decision = decision


@dataclass
class Access:
    """The gateway's gate, kept on `app.state.access` (built in the lifespan)."""

    tokens: TokenCache
    limiter: RateLimiter

    async def admit(self, authorization: str | None) -> tuple[Principal, Decision | None]:
        """Verify the caller (401) and charge its tenant's bucket (429)."""
        principal = await self.tokens.principal(bearer(authorization))
        if not self.limiter.enabled:
            return principal, None
        decision = self.limiter.take(principal.tenant)
        if not decision.allowed:
            raise RateLimited(decision)
        return principal, decision


async def admitted(request: Request) -> Principal:
    access: Access = request.app.state.access
    principal, _ = await access.admit(request.headers.get("authorization"))
    return principal


AdmittedDep = Annotated[Principal, Depends(admitted)]
