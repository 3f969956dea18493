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
        adapter = raw.dbapi_connection
        begin = getattr(adapter, "_start_transaction", None)
        if begin is not None and getattr(adapter, "_transaction", False) is None:
            # the adapter's own lazy BEGIN (what its first statement would do), so that its
            # commit/rollback end this transaction; saves a `SELECT 1` round trip per write
            await begin()
        else:  # pragma: no cover - another adapter version: let SQLAlchemy begin
            await session.execute(text("SELECT 1"))
    return driver
