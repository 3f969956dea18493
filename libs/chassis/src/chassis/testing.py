"""pytest plugin: real PostgreSQL and nats-server started once per test run on free ports,
a migrated database per service with clean tables for every test, dev JWTs, and helpers that
wait for asynchronous effects with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import nats
import pytest
from fastapi import FastAPI

from chassis import devkeys
from chassis.db import asyncpg_dsn
from chassis.infra import NatsProcess, Postgres, ensure_database
from chassis.migrations import upgrade
from chassis.settings import ServiceSettings, with_database

S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")


@dataclass
class Infra:
    pg: Postgres
    nats: NatsProcess
    jwt_dir: Path
    _migrated: dict[str, str] = field(default_factory=dict)

    @property
    def nats_url(self) -> str:
        return self.nats.url

    async def database(
        self, name: str, migrations_dir: Path | None = None, version_table: str | None = None
    ) -> str:
        """A database for one service, migrated once per run and emptied for each test."""
        url = self._migrated.get(name)
        if url is None:
            url = with_database(self.pg.url(), name)
            await ensure_database(self.pg.url(), name)
            if migrations_dir is not None:
                await upgrade(migrations_dir, url, version_table or f"alembic_version_{name}")
            self._migrated[name] = url
        await truncate_all(url)
        return url

    def settings(self, cls: type[S], service: str, database_url: str, **overrides: Any) -> S:
        values: dict[str, Any] = {
            "service_name": service,
            "env": "test",
            "database_url": database_url,
            "nats_url": self.nats_url,
            "jwks_file": self.jwt_dir / "jwks.json",
            "relay_poll_seconds": 0.5,
            "log_json": False,
            "db_pool_size": 8,  # at most 10 with the burst allowance
            "db_read_pool_size": 5,
            "consumer_max_deliver": 4,
        }
        values.update(overrides)
        return cls(**values)

    def token(
        self,
        tenant: str = "acme",
        roles: list[str] | None = None,
        sub: str = "user-1",
        teams: list[str] | None = None,
        **kw: Any,
    ) -> str:
        return devkeys.mint_token(
            self.jwt_dir, tenant=tenant, roles=roles or ["admin"], sub=sub, teams=teams, **kw
        )

    def auth(
        self,
        tenant: str = "acme",
        roles: list[str] | None = None,
        sub: str = "user-1",
        teams: list[str] | None = None,
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, roles, sub, teams)}"}

    async def reset_streams(self) -> None:
        """Delete every JetStream stream (and so every durable consumer) for a clean test."""
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                if info.config.name:
                    await js.delete_stream(info.config.name)
        finally:
            await nc.close()


async def truncate_all(url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        names = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT LIKE 'alembic_version%'"
        )
        if names:
            joined = ", ".join(f'"{r["tablename"]}"' for r in names)
            await conn.execute(f"TRUNCATE {joined} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll `probe` until it returns something truthy; fail with the last value at the
    deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    """Run an app's lifespan (engine, NATS, relay, consumers) around a test, once its
    consumers are subscribed (so events published by the test are not missed)."""
    async with app.router.lifespan_context(app):
        for runner in getattr(app.state, "consumers", []):
            await asyncio.wait_for(runner.subscribed.wait(), 20)
        yield app


@pytest.fixture(scope="session")
def crm_infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    base = tmp_path_factory.mktemp("crm")
    pg = Postgres(base / "pg")
    # Tests need no crash durability of PostgreSQL; NATS keeps sync_interval: always.
    pg.server.psql(
        "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off; "
        "ALTER SYSTEM SET full_page_writes = off; SELECT pg_reload_conf();"
    )
    broker = NatsProcess(base / "nats")
    broker.start()
    jwt_dir = base / "jwt"
    devkeys.ensure_dev_keys(jwt_dir)
    try:
        yield Infra(pg, broker, jwt_dir)
    finally:
        broker.stop()
        pg.stop()


@pytest.fixture
async def clean_streams(crm_infra: Infra) -> None:
    if crm_infra.nats.proc is None:
        crm_infra.nats.start()
    await crm_infra.reset_streams()
