"""The SMTP sink as a process (as `make run` starts it) and the settings guard."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import pytest
from pydantic import ValidationError

from campaigns.settings import CampaignsSettings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _send_when_up(port: int) -> None:
    for _ in range(100):
        try:
            await aiosmtplib.send(
                b"Subject: hi\r\n\r\nbody\r\n",
                sender="a@crm.local",
                recipients=["b@example.com"],
                hostname="127.0.0.1",
                port=port,
            )
            return
        except (aiosmtplib.SMTPConnectError, OSError):
            await asyncio.sleep(0.1)
    raise AssertionError("the sink never came up")


def test_sink_process_writes_eml(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "campaigns.smtp_sink", "--dir", str(tmp_path), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(_send_when_up(port))
        files = list(tmp_path.glob("*.eml"))
        assert len(files) == 1
        assert b"Subject: hi" in files[0].read_bytes()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_dev_signing_secret_is_refused_in_prod() -> None:
    prod = {
        "env": "prod",
        "jwks_url": "https://idp.example/jwks",
        "jwt_issuer": "https://idp.example",
    }
    with pytest.raises(ValidationError, match="SIGNING_SECRET"):
        CampaignsSettings(**prod)  # type: ignore[arg-type]
    ok = CampaignsSettings(**prod, signing_secret="s3cret-from-the-vault")  # type: ignore[arg-type]
    assert ok.signing_secret == "s3cret-from-the-vault"
