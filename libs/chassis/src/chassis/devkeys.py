"""The local development signing key (generated under .data/jwt) and dev token minting.
Refused outside `CRM_ENV=dev|test` by the settings."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


def ensure_dev_keys(directory: Path) -> Path:
    """Create an RSA key pair and its JWKS in `directory` once; return the private key path."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / "dev-private.pem"
    jwks_path = directory / "jwks.json"
    if private_path.exists() and jwks_path.exists():
        return private_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = private_path.with_suffix(".tmp")
    tmp.write_bytes(pem)
    tmp.chmod(0o600)
    tmp.replace(private_path)
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": f"dev-{uuid.uuid4().hex[:8]}", "alg": "RS256", "use": "sig"})
    jwks_path.write_text(json.dumps({"keys": [jwk]}, indent=2))
    return private_path


def mint_token(
    directory: Path,
    *,
    tenant: str,
    roles: list[str],
    sub: str = "user-1",
    teams: list[str] | None = None,
    issuer: str = "crm-dev",
    audience: str = "crm",
    ttl_seconds: int = 12 * 3600,
    client: str = "dev-cli",
    extra: dict[str, Any] | None = None,
) -> str:
    private_path = ensure_dev_keys(directory)
    kid = json.loads((directory / "jwks.json").read_text())["keys"][0]["kid"]
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "tenant": tenant,
        "roles": roles,
        "teams": teams or [],
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_seconds,
        "azp": client,
    }
    claims.update(extra or {})
    return jwt.encode(claims, private_path.read_bytes(), algorithm="RS256", headers={"kid": kid})
