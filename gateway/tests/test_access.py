"""Admission: bearer parsing, verification, the per-tenant token bucket (pure logic)."""

from __future__ import annotations

import time

import pytest

from chassis.auth import Principal
from chassis.problems import Unauthorized
from gateway.access import Access, RateLimited, RateLimiter, bearer


class _CountingVerifier:
    def __init__(self) -> None:
        self.calls = 0

    async def verify(self, token: str) -> Principal:
        self.calls += 1
        if token == "bad":
            raise Unauthorized("invalid token")
        return Principal(sub="u", tenant="acme", roles=frozenset({"admin"}))


class TestRateLimiter:
    def test_burst_then_refill(self, monkeypatch: pytest.MonkeyPatch) -> None:
        now = [1000.0]
        monkeypatch.setattr(time, "monotonic", lambda: now[0])
        limiter = RateLimiter(rate=2, burst=2)
        assert [limiter.take("acme").allowed for _ in range(3)] == [True, True, False]
        denied = limiter.take("acme")
        assert denied.retry_after == 1
        assert denied.remaining == 0
        assert limiter.take("globex").allowed
        now[0] += 0.5  # one token back
        d = limiter.take("acme")
        assert d.allowed
        assert d.remaining == 0
        now[0] += 10  # never more than the burst
        assert limiter.take("acme").remaining == 1

    async def test_access_admits_verifies_then_limits(self) -> None:
        access = Access(
            _CountingVerifier(),  # type: ignore[arg-type]
            RateLimiter(rate=0.001, burst=1),
            RateLimiter(rate=0, burst=1),
        )
        with pytest.raises(Unauthorized):
            await access.admit(None)
        principal, decision = await access.admit("Bearer good")
        assert principal.tenant == "acme"
        assert decision is not None
        with pytest.raises(RateLimited) as e:
            await access.admit("Bearer good")
        assert e.value.decision.headers()["Retry-After"] == "1000"

    def test_bearer(self) -> None:
        assert bearer("Bearer abc ") == "abc"
        assert bearer("bearer abc") == "abc"
        for bad in (None, "", "Bearer", "Basic abc"):
            with pytest.raises(Unauthorized):
                bearer(bad)
