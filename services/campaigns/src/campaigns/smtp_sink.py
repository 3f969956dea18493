"""A local SMTP sink for development and tests: accepts every message and writes it as an
.eml file. `python -m campaigns.smtp_sink --dir .data/mail --port 2525`.

For tests it can also refuse recipients permanently (`reject`: 550) or fail the next N
messages transiently (`fail_next`: 451), to exercise bounces and retries."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("campaigns.smtp_sink")


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower() in self.sink.reject:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.sink.lock:
            if self.sink.fail_next > 0:
                self.sink.fail_next -= 1
                return "451 4.3.0 try again later"
        content = envelope.original_content or b""
        if isinstance(content, str):
            content = content.encode()
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        (self.sink.directory / name).write_bytes(content)
        with self.sink.lock:
            self.sink.received += 1
        return "250 OK: queued"


class SmtpSink:
    """An aiosmtpd server in its own thread that stores messages under `directory`."""

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", port: int = 2525) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.reject: set[str] = set()
        self.fail_next = 0
        self.received = 0
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, data_size_limit=0
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[Path]:
        return sorted(self.directory.glob("*.eml"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SMTP sink writing each message as .eml")
    parser.add_argument("--dir", default=".data/mail", help="where to write .eml files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sink = SmtpSink(Path(args.dir), host=args.host, port=args.port)
    sink.start()
    log.info("SMTP sink on %s:%d writing to %s", args.host, args.port, args.dir)
    stop.wait()
    sink.stop()


if __name__ == "__main__":
    main()
