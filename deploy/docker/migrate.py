"""Alembic migrations of one service inside its container image.

The image's migration Job runs `python /app/migrate.py upgrade`; the Dockerfile uses
`install-migrations` and `head` at build time. The service is `--service` or `$APP_SERVICE`
(set by the Dockerfile); everything else is resolved exactly as the running service does it:

- the database URL by `chassis.settings.load_settings` (`<SERVICE>_DATABASE_URL`, else
  `CRM_DATABASE_URL` pointed at the database `crm_<service>`); a password may come from
  `PGPASSWORD` (asyncpg reads it when the URL carries none);
- the migrations directory is the `MIGRATIONS` constant of `<service>.app`, the one the app's
  `/readyz` compares against;
- the version table is `chassis.app.ServiceSpec(name=service).version_table`.

Exit status: 0 when the database is at head, 1 on a migration error, 2 on bad usage, 3 when
the database stayed unreachable for `--wait` seconds (the Job's backoff retries it).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import asyncpg

from chassis.app import ServiceSpec
from chassis.db import asyncpg_dsn
from chassis.migrations import current_revision, head_revision, upgrade_sync
from chassis.settings import ServiceSettings, load_settings

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class UsageError(Exception):
    pass


def migrations_dir(service: str) -> Path:
    """The directory the installed app of `service` reads its migrations from."""
    try:
        module = importlib.import_module(f"{service}.app")
    except ModuleNotFoundError as e:
        raise UsageError(f"service {service!r}: cannot import {service}.app ({e})") from e
    path = getattr(module, "MIGRATIONS", None)
    if not isinstance(path, Path):
        raise UsageError(f"{service}.app defines no MIGRATIONS path")
    return path


def version_table(service: str) -> str:
    return ServiceSpec(name=service, title=service).version_table


def database_url(service: str) -> str:
    return load_settings(ServiceSettings, service).database_url


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


async def _probe(url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    await conn.close()


def wait_for_database(url: str, seconds: float) -> str | None:
    """None once the server accepts a connection, else the last error after `seconds`."""
    deadline = time.monotonic() + seconds
    delay = 0.5
    while True:
        try:
            asyncio.run(_probe(url))
            return None
        except (TimeoutError, OSError, asyncpg.PostgresError) as e:
            error = f"{type(e).__name__}: {e}"
        if time.monotonic() + delay > deadline:
            return error
        print(f"[migrate] database not reachable yet ({error}); retrying", flush=True)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def cmd_upgrade(service: str, wait: float) -> int:
    url = database_url(service)
    directory = migrations_dir(service)
    table = version_table(service)
    head = head_revision(directory)
    print(
        f"[migrate] {service}: {redact(url)} -> head {head} ({directory}, table {table})",
        flush=True,
    )
    error = wait_for_database(url, wait)
    if error is not None:
        print(f"[migrate] {service}: database unreachable after {wait}s: {error}", flush=True)
        return EXIT_UNREACHABLE
    try:
        upgrade_sync(directory, url, table)
        current = asyncio.run(current_revision(url, table))
    except Exception as e:
        print(f"[migrate] {service}: migration failed: {type(e).__name__}: {e}", flush=True)
        return EXIT_FAILED
    if current != head:
        print(f"[migrate] {service}: at {current}, expected head {head}", flush=True)
        return EXIT_FAILED
    print(json.dumps({"service": service, "revision": current, "status": "at head"}), flush=True)
    return 0


def cmd_head(service: str) -> int:
    directory = migrations_dir(service)
    if not (directory / "env.py").is_file():
        raise UsageError(f"{service}: no migrations at {directory} (env.py missing)")
    print(head_revision(directory))
    return 0


def cmd_install(service: str, source: Path) -> int:
    """Copy a member's `migrations/` to where the installed (non-editable) app looks."""
    if not (source / "env.py").is_file():
        raise UsageError(f"{source} is not an Alembic directory (env.py missing)")
    target = migrations_dir(service)
    if source.resolve() == target.resolve():
        print(f"[migrate] {service}: migrations already at {target}")
        return 0
    shutil.copytree(
        source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    print(f"[migrate] {service}: installed {source} at {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="migrate.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--service",
        default=os.environ.get("APP_SERVICE"),
        help="service name (default: $APP_SERVICE)",
    )
    sub = parser.add_subparsers(dest="command")
    up = sub.add_parser("upgrade", help="upgrade the service's database to head (default)")
    up.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server")
    sub.add_parser("head", help="print the head revision of the installed migrations")
    inst = sub.add_parser("install-migrations", help="build time: place migrations for the app")
    inst.add_argument("source", type=Path)
    args = parser.parse_args(argv)
    if not args.service:
        parser.error("no service: pass --service or set APP_SERVICE")
    try:
        if args.command == "head":
            return cmd_head(args.service)
        if args.command == "install-migrations":
            return cmd_install(args.service, args.source)
        return cmd_upgrade(args.service, getattr(args, "wait", 60.0))
    except UsageError as e:
        print(f"[migrate] {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
