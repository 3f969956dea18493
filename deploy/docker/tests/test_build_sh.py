"""deploy/docker/build.sh builds one image per workspace service and the gateway, each from
the shared Dockerfile with its own SERVICE and MEMBER."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "deploy" / "docker" / "build.sh"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**os.environ, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_service_and_the_gateway_get_an_image() -> None:
    result = _run(REGISTRY="r.example/crm", TAG="1.2.3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    services = sorted(p.name for p in (ROOT / "services").iterdir() if p.is_dir())
    assert len(lines) == len(services) + 1
    for svc in services:
        assert (
            f"docker build -f deploy/docker/Dockerfile --build-arg SERVICE={svc} "
            f"--build-arg MEMBER=services/{svc} -t r.example/crm/crm-{svc}:1.2.3 ."
        ) in lines
    assert lines[-1].endswith(
        "--build-arg SERVICE=gateway --build-arg MEMBER=gateway "
        "-t r.example/crm/crm-gateway:1.2.3 ."
    )


def test_push_and_selection() -> None:
    result = _run("contacts", PUSH="1", REGISTRY="r", TAG="t")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "docker push r/crm-contacts:t"
    assert len(result.stdout.splitlines()) == 2


def test_unknown_service_is_refused() -> None:
    result = _run("nosuch")
    assert result.returncode == 2
    assert "no workspace member services/nosuch" in result.stderr
    assert result.stdout == ""
