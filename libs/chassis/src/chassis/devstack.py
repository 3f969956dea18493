"""The local stack behind `make run` and `make token`.

`run`: embedded PostgreSQL (unless CRM_DATABASE_URL is set) and nats-server (unless
CRM_NATS_URL is set) with data under .data/, one database per service, Alembic migrations,
then every service of stack.toml under honcho (prefixed logs; Ctrl-C / SIGTERM stops them
all), a ready line once every /readyz answers."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

from chassis import devkeys
from chassis.infra import Postgres, ensure_database, nats_server_binary, write_nats_config
from chassis.migrations import upgrade_sync
from chassis.settings import with_database

ROOT = Path.cwd()
DATA = Path(os.environ.get("CRM_DATA_DIR", ROOT / ".data")).resolve()
NATS_PORT = 4222


def load_stack(path: Path = ROOT / "stack.toml") -> dict[str, dict[str, Any]]:
    with path.open("rb") as f:
        services: dict[str, dict[str, Any]] = tomllib.load(f)["services"]
    return services


def load_processes(path: Path = ROOT / "stack.toml") -> dict[str, dict[str, Any]]:
    """Helper processes of the local stack (e.g. the SMTP sink): `[processes.<name>]` with a
    `command` run with this interpreter (`{python}` and `{data}` are substituted)."""
    with path.open("rb") as f:
        processes: dict[str, dict[str, Any]] = tomllib.load(f).get("processes", {})
    return processes


def _migrate(server_url: str, services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        db = f"crm_{name.replace('-', '_')}"
        asyncio.run(ensure_database(server_url, db))
        upgrade_sync(
            ROOT / svc["migrations"],
            with_database(server_url, db),
            f"alembic_version_{name.replace('-', '_')}",
        )
        print(f"[stack] {name}: database {db} migrated", flush=True)


def _die_with_parent() -> None:
    """`make run` killed with SIGTERM does not pass the signal on: ask Linux to send it to
    us when our parent (make) dies, so the stack never outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def cmd_run(args: argparse.Namespace) -> int:
    from honcho.manager import Manager
    from honcho.printer import Printer

    _die_with_parent()
    services = load_stack()
    DATA.mkdir(parents=True, exist_ok=True)
    devkeys.ensure_dev_keys(DATA / "jwt")
    pg: Postgres | None = None
    server_url = os.environ.get("CRM_DATABASE_URL")
    if not server_url:
        pg = Postgres(DATA / "pg")
        server_url = pg.url()
        print(f"[stack] PostgreSQL (embedded) at {server_url}", flush=True)
    nats_url = os.environ.get("CRM_NATS_URL")
    manager = Manager(Printer(sys.stdout, colour=sys.stdout.isatty()))
    if not nats_url:
        conf = write_nats_config(DATA / "nats", NATS_PORT)
        nats_url = f"nats://127.0.0.1:{NATS_PORT}"
        manager.add_process("nats", f"{nats_server_binary()} -c {conf}")
    try:
        _migrate(server_url, services)
        env = {
            **os.environ,
            "CRM_ENV": os.environ.get("CRM_ENV", "dev"),
            "CRM_DATABASE_URL": server_url,
            "CRM_NATS_URL": nats_url,
            "CRM_JWKS_FILE": str(DATA / "jwt" / "jwks.json"),
            "GATEWAY_UPSTREAMS": json.dumps(
                {n: f"http://127.0.0.1:{s['port']}" for n, s in services.items() if n != "gateway"}
            ),
        }
        py = sys.executable
        for name, svc in services.items():
            manager.add_process(
                name,
                f"{py} -m uvicorn --factory {svc['app']} --host 127.0.0.1 --port {svc['port']} "
                "--no-access-log --log-level warning",
                env=env,
            )
        for name, proc in load_processes().items():
            command = proc["command"].format(python=py, data=DATA)
            manager.add_process(name, command, env=env)
        urls = " ".join(f"{n}=http://127.0.0.1:{s['port']}" for n, s in services.items())
        manager.add_process("ready", f"{py} -m chassis.devstack wait-ready {urls}", env=env)
        manager.loop()
        return int(manager.returncode or 0)
    finally:
        if pg is not None:
            pg.stop()
            print("[stack] PostgreSQL stopped", flush=True)


def cmd_wait_ready(args: argparse.Namespace) -> int:
    pending = dict(item.split("=", 1) for item in args.services)
    deadline = time.monotonic() + args.timeout
    while pending and time.monotonic() < deadline:
        for name, url in list(pending.items()):
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:  # noqa: S310
                    if r.status == 200:
                        print(f"{name:>10}: {url}  (ready)", flush=True)
                        del pending[name]
            except OSError:
                pass
        time.sleep(0.3)
    if pending:
        print(f"NOT READY after {args.timeout}s: {', '.join(pending)}", flush=True)
        return 1
    print(
        "READY: gateway http://127.0.0.1:8000  (docs http://127.0.0.1:8000/docs, "
        "token: make token TENANT=acme ROLE=admin)",
        flush=True,
    )
    while True:  # honcho stops the whole stack when any process ends
        time.sleep(3600)


def cmd_token(args: argparse.Namespace) -> int:
    token = devkeys.mint_token(
        DATA / "jwt",
        tenant=args.tenant,
        roles=args.role.split(","),
        sub=args.sub,
        teams=[t for t in args.teams.split(",") if t],
        ttl_seconds=args.ttl,
        issuer=os.environ.get("CRM_JWT_ISSUER", "crm-dev"),
        audience=os.environ.get("CRM_JWT_AUDIENCE", "crm"),
    )
    print(token)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    server_url = os.environ.get("CRM_DATABASE_URL")
    pg = None
    if not server_url:
        pg = Postgres(DATA / "pg")
        server_url = pg.url()
    try:
        _migrate(server_url, load_stack())
    finally:
        if pg is not None:
            pg.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chassis.devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run").set_defaults(fn=cmd_run)
    sub.add_parser("migrate").set_defaults(fn=cmd_migrate)
    w = sub.add_parser("wait-ready")
    w.add_argument("services", nargs="+")
    w.add_argument("--timeout", type=float, default=120)
    w.set_defaults(fn=cmd_wait_ready)
    t = sub.add_parser("token")
    t.add_argument("--tenant", default="acme")
    t.add_argument("--role", default="admin")
    t.add_argument("--sub", default="user-1")
    t.add_argument("--teams", default="")
    t.add_argument("--ttl", type=int, default=12 * 3600)
    t.set_defaults(fn=cmd_token)
    args = parser.parse_args(argv)
    result: int = args.fn(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
