"""Async engine and the per-request session, committed once by the chassis.

Service code flushes; the chassis writes the collected outbox events and commits, once,
after the handler succeeded, and rolls back on any error.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import outbox


def asyncpg_dsn(url: str) -> str:
    """A plain `postgresql://` DSN for asyncpg from any SQLAlchemy-style URL."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def sqlalchemy_url(url: str) -> str:
    return "postgresql+asyncpg://" + asyncpg_dsn(url)[len("postgresql://") :]


class Database:
    """One service's database: an SQLAlchemy engine and, on demand, a raw asyncpg pool for
    hot read paths where ORM overhead is not affordable."""

    def __init__(self, url: str, *, pool_size: int = 10, read_pool_size: int | None = None) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            sqlalchemy_url(url),
            pool_size=pool_size,
            max_overflow=max(1, pool_size // 4),
            pool_pre_ping=False,
        )
        self.sessionmaker = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False, autoflush=True
        )
        self._pool: asyncpg.Pool | None = None
        self._pool_size = read_pool_size or pool_size

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                asyncpg_dsn(self.url), min_size=1, max_size=self._pool_size
            )
        return self._pool

    async def dispose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await self.engine.dispose()


async def commit(session: AsyncSession) -> None:
    """Write the events collected in this unit of work to the outbox, then commit."""
    await outbox.flush_events(session)
    await session.commit()
    outbox.committed(session)


@contextlib.asynccontextmanager
async def unit_of_work(db: Database) -> AsyncIterator[AsyncSession]:
    """A session outside a request (schedulers, background work): committed once by the
    chassis on success (outbox rows first, relay woken), rolled back on error. Code inside
    flushes and never commits."""
    async with db.sessionmaker() as session:
        try:
            yield session
            await commit(session)
        except BaseException:
            await session.rollback()
            raise


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def session_dependency(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; committed once on success (before the response is sent, see
    `SessionDep`), rolled back on error."""
    async with unit_of_work(get_database(request)) as session:
        yield session


# scope="function": commit before the response is sent. FastAPI's default for a dependency
# with yield ("request") runs the code after `yield` once the response is out, so a client
# could read its 201 before the commit (and not find what it wrote), or get a 201 for a
# write whose commit then failed.
SessionDep = Annotated[AsyncSession, Depends(session_dependency, scope="function")]


def session_info(session: AsyncSession) -> dict[str, Any]:
    info: dict[str, Any] = session.sync_session.info
    return info
