"""The asyncpg connection under a session, for the few hot or bulk paths (COPY, prepared
executemany) where SQLAlchemy's per-statement work is not affordable."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession


async def raw_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under `session`, inside the session's transaction. SQLAlchemy's
    asyncpg adapter sends BEGIN lazily with its own first statement, so make sure one ran:
    otherwise raw statements would autocommit outside the unit of work."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    if not driver.is_in_transaction():
        await session.execute(text("SELECT 1"))
    return driver
