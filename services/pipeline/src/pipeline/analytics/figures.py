"""Decimal helpers (money stays Decimal end to end and is written as a string) and the
planner settings of the analytical statements."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

CENT = Decimal("0.01")
RATIO = Decimal("0.0001")


def money(value: Decimal) -> str:
    """An exact sum, written with at least two decimals (more when the inputs had more)."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent <= -2:
        return format(value, "f")
    return format(value.quantize(CENT), "f")


def rounded(value: Decimal, step: Decimal = CENT) -> str:
    """A derived figure (weighted, historical, means, days), rounded half up."""
    with localcontext() as ctx:
        ctx.prec = 60
        return format(value.quantize(step, rounding=ROUND_HALF_UP), "f")


def ratio(numerator: int | Decimal, denominator: int | Decimal) -> str | None:
    """numerator / denominator with four decimals (half up); None when nothing to divide."""
    if not denominator:
        return None
    with localcontext() as ctx:
        ctx.prec = 60
        return rounded(Decimal(numerator) / Decimal(denominator), RATIO)


async def analytical(session: AsyncSession, work_mem: str | None = None) -> None:
    """Plan the next statements of this transaction for their actual parameters: a generic
    plan of a prepared statement cannot tell a one-owner forecast from a whole-tenant one
    (or a 1M-row funnel window from a week) and picks index scans for both."""
    await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    if work_mem is not None:
        # the median sorts the window's stays in memory rather than on disk
        await session.execute(text(f"SET LOCAL work_mem = '{work_mem}'"))
