"""Alembic helpers: every service keeps its own `migrations/` and `version_table`; the
chassis tables (outbox, inbox, ...) are created by each service's first revision."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, pool
from sqlalchemy.ext.asyncio import create_async_engine

from chassis import tables
from chassis.db import sqlalchemy_url


def alembic_config(migrations_dir: Path, database_url: str, version_table: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url))
    cfg.attributes["version_table"] = version_table
    return cfg


def head_revision(migrations_dir: Path) -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    return ScriptDirectory.from_config(cfg).get_current_head()


def upgrade_sync(migrations_dir: Path, database_url: str, version_table: str) -> None:
    command.upgrade(alembic_config(migrations_dir, database_url, version_table), "head")


async def upgrade(migrations_dir: Path, database_url: str, version_table: str) -> None:
    """Alembic cannot run inside a running loop: run it in a thread with its own loop."""
    await asyncio.to_thread(upgrade_sync, migrations_dir, database_url, version_table)


def run_env(context: object, target_metadata: MetaData | None = None) -> None:
    """The body of every service's `migrations/env.py` (online mode, asyncpg)."""
    from alembic import context as alembic_context

    assert context is alembic_context
    cfg = alembic_context.config
    url = cfg.get_main_option("sqlalchemy.url")
    assert url
    version_table = cfg.attributes.get("version_table", "alembic_version")

    def do_run(connection: Connection) -> None:
        alembic_context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=version_table,
            transaction_per_migration=True,
        )
        with alembic_context.begin_transaction():
            alembic_context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as conn:
            await conn.run_sync(do_run)
            await conn.commit()
        await engine.dispose()

    asyncio.run(run_async())


def create_chassis_tables(connection: Connection) -> None:
    """Called from a service's first revision: `op.get_bind()` -> outbox, inbox, positions,
    dead letters and idempotency keys."""
    tables.metadata.create_all(connection)


async def current_revision(engine_url: str, version_table: str) -> str | None:
    engine = create_async_engine(sqlalchemy_url(engine_url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: MigrationContext.configure(
                    c, opts={"version_table": version_table}
                ).get_current_revision()
            )
    finally:
        await engine.dispose()
