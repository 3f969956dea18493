"""deploy/docker/migrate.py, the migration Job's entry point, against real PostgreSQL: run as a
subprocess exactly as the Job runs it (only environment variables configure it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import asyncpg

from chassis.db import asyncpg_dsn
from chassis.infra import ensure_database
from chassis.migrations import head_revision
from chassis.settings import with_database
from chassis.testing import Infra
from contacts.app import MIGRATIONS as CONTACTS_MIGRATIONS

SCRIPT = Path(__file__).resolve().parents[1] / "migrate.py"


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "CONTACTS_", "APP_", "PG"))
    }
    env.update(extra)
    return env


def _run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def _version(url: str, table: str) -> str | None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        value: str | None = await conn.fetchval(f"SELECT version_num FROM {table}")
        return value
    finally:
        await conn.close()


async def test_upgrade_migrates_the_service_database_named_like_the_service(
    crm_infra: Infra,
) -> None:
    """CRM_DATABASE_URL names the server; the Job migrates crm_<service> on it, like the app."""
    server = crm_infra.pg.url()
    await ensure_database(server, "crm_contacts")
    head = head_revision(CONTACTS_MIGRATIONS)
    assert head

    first = _run("upgrade", env=_env(CRM_DATABASE_URL=server, APP_SERVICE="contacts"))
    assert first.returncode == 0, first.stdout + first.stderr
    assert '"status": "at head"' in first.stdout
    assert await _version(with_database(server, "crm_contacts"), "alembic_version_contacts") == head

    again = _run("--service", "contacts", "upgrade", env=_env(CRM_DATABASE_URL=server))
    assert again.returncode == 0, again.stdout + again.stderr
    assert await _version(with_database(server, "crm_contacts"), "alembic_version_contacts") == head


async def test_service_specific_url_wins_and_tables_exist(crm_infra: Infra) -> None:
    server = crm_infra.pg.url()
    name = f"deploy_migrate_{uuid.uuid4().hex[:8]}"
    await ensure_database(server, name)
    url = with_database(server, name)
    result = _run(
        "upgrade",
        env=_env(
            CRM_DATABASE_URL=with_database(server, "must_not_be_used"),
            CONTACTS_DATABASE_URL=url,
            APP_SERVICE="contacts",
        ),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
        missing = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname='must_not_be_used'")
    finally:
        await conn.close()
    assert {"contacts", "outbox", "alembic_version_contacts"} <= tables
    assert missing is None


def test_head_prints_the_revision_the_app_expects() -> None:
    result = _run("--service", "contacts", "head", env=_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == head_revision(CONTACTS_MIGRATIONS)


def test_unknown_service_is_a_usage_error() -> None:
    result = _run("--service", "nosuchservice", "upgrade", env=_env())
    assert result.returncode == 2
    assert "cannot import nosuchservice.app" in result.stderr


def test_missing_service_is_a_usage_error() -> None:
    result = _run("upgrade", env=_env())
    assert result.returncode == 2
    assert "no service" in result.stderr


def test_unreachable_database_gives_up_after_the_wait() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = _run(
        "upgrade",
        "--wait",
        "1.5",
        env=_env(
            CONTACTS_DATABASE_URL=f"postgresql://u@127.0.0.1:{port}/x",
            APP_SERVICE="contacts",
            PGPASSWORD="secret-value",
        ),
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "database unreachable" in result.stdout
    assert time.monotonic() - started < 30
    assert "secret-value" not in result.stdout + result.stderr


def test_install_migrations_places_them_where_the_app_reads_them(tmp_path: Path) -> None:
    """Non-editable images: the migrations are copied to the app's MIGRATIONS path."""
    pkg = tmp_path / "site" / "fakesvc"
    pkg.mkdir(parents=True)
    target = tmp_path / "installed-migrations"
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            MIGRATIONS = Path({str(target)!r})
            """
        )
    )
    source = tmp_path / "member" / "migrations"
    (source / "versions" / "__pycache__").mkdir(parents=True)
    (source / "env.py").write_text("# env\n")
    (source / "versions" / "0001_x.py").write_text("revision = '0001'\n")
    (source / "versions" / "__pycache__" / "junk.pyc").write_bytes(b"x")
    env = _env(PYTHONPATH=str(tmp_path / "site"))

    result = _run("--service", "fakesvc", "install-migrations", str(source), env=env)
    assert result.returncode == 0, result.stderr
    assert (target / "env.py").read_text() == "# env\n"
    assert (target / "versions" / "0001_x.py").is_file()
    assert not (target / "versions" / "__pycache__").exists()

    (tmp_path / "empty").mkdir()
    bad = _run("--service", "fakesvc", "install-migrations", str(tmp_path / "empty"), env=env)
    assert bad.returncode == 2
    assert "env.py missing" in bad.stderr
