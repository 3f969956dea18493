"""Who may pass the gateway: JWT verification (the chassis `Verifier`, which remembers verified
tokens until they expire), then token-bucket rate limits per caller (tenant, subject,
client) and per tenant; public routes get a bucket per client address instead."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from chassis.auth import Principal, Verifier
from chassis.problems import TooManyRequests, Unauthorized


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
    def __init__(self, decision: Decision, what: str = "rate limit of the tenant exceeded") -> None:
        super().__init__(f"{what}; retry in {decision.retry_after}s")
        self.decision = decision


@dataclass
class Access:
    """The gateway's gate, kept on `app.state.access` (built in the lifespan)."""

    verifier: Verifier
    limiter: RateLimiter
    # Public routes (no JWT): a bucket per client address, much stricter than a tenant's.
    public_limiter: RateLimiter
    # A bucket per caller (tenant, subject, client) inside the tenant's: one runaway
    # integration cannot spend the whole tenant's budget.
    token_limiter: RateLimiter | None = None

    def admit_public(self, client: str) -> Decision | None:
        """Charge the client address's bucket (429) on a public route."""
        if not self.public_limiter.enabled:
            return None
        decision = self.public_limiter.take(client)
        if not decision.allowed:
            raise RateLimited(decision, "rate limit of public endpoints exceeded")
        return decision

    async def admit(self, authorization: str | None) -> tuple[Principal, Decision | None]:
        """Verify the caller (401) and charge its tenant's bucket (429)."""
        principal = await self.verifier.verify(bearer(authorization))
        token = self.token_limiter
        if token is not None and token.enabled:
            key = f"{principal.tenant}\x00{principal.sub}\x00{principal.client}"
            mine = token.take(key)
            if not mine.allowed:
                raise RateLimited(mine, "rate limit of this caller exceeded")
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
