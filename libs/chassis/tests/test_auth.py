from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chassis import devkeys
from chassis.auth import KeySet, Verifier
from chassis.problems import Unauthorized


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("jwt")
    devkeys.ensure_dev_keys(d)
    return d


@pytest.fixture(scope="module")
async def verifier(keydir: Path) -> Verifier:
    keys = KeySet(jwks_file=keydir / "jwks.json")
    await keys.load()
    return Verifier(keys, issuer="crm-dev", audience="crm")


def kid(keydir: Path) -> str:
    return str(json.loads((keydir / "jwks.json").read_text())["keys"][0]["kid"])


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    c: dict[str, Any] = {
        "sub": "u1",
        "tenant": "acme",
        "roles": ["admin"],
        "iss": "crm-dev",
        "aud": "crm",
        "iat": now,
        "exp": now + 600,
    }
    c.update(overrides)
    return {k: v for k, v in c.items() if v is not None}


def sign(keydir: Path, body: dict[str, Any]) -> str:
    return jwt.encode(
        body,
        (keydir / "dev-private.pem").read_bytes(),
        algorithm="RS256",
        headers={"kid": kid(keydir)},
    )


class TestVerify:
    async def test_valid_token_gives_principal(self, keydir: Path, verifier: Verifier) -> None:
        token = devkeys.mint_token(
            keydir, tenant="acme", roles=["sales_rep"], sub="u-9", teams=["east"]
        )
        p = await verifier.verify(token)
        assert (p.sub, p.tenant, p.roles, p.teams) == (
            "u-9",
            "acme",
            frozenset({"sales_rep"}),
            ("east",),
        )

    async def test_alg_none_is_refused(self, keydir: Path, verifier: Verifier) -> None:
        header = base64.urlsafe_b64encode(
            json.dumps({"alg": "none", "kid": kid(keydir)}).encode()
        ).rstrip(b"=")
        payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
        with pytest.raises(Unauthorized, match="algorithm"):
            await verifier.verify(f"{header.decode()}.{payload.decode()}.")

    async def test_wrong_key_is_refused(self, keydir: Path, verifier: Verifier) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(claims(), other, algorithm="RS256", headers={"kid": kid(keydir)})
        with pytest.raises(Unauthorized, match="Signature"):
            await verifier.verify(token)

    async def test_hs256_signed_with_the_public_key_is_refused(
        self, keydir: Path, verifier: Verifier
    ) -> None:
        pub = (
            serialization.load_pem_private_key((keydir / "dev-private.pem").read_bytes(), None)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        header = base64.urlsafe_b64encode(
            json.dumps({"alg": "HS256", "kid": kid(keydir), "typ": "JWT"}).encode()
        ).rstrip(b"=")
        payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
        import hashlib
        import hmac

        signing_input = header + b"." + payload
        sig = base64.urlsafe_b64encode(
            hmac.new(pub, signing_input, hashlib.sha256).digest()
        ).rstrip(b"=")
        with pytest.raises(Unauthorized, match="algorithm"):
            await verifier.verify((signing_input + b"." + sig).decode())

    async def test_es256_with_unknown_key_is_refused(
        self, keydir: Path, verifier: Verifier
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        token = jwt.encode(claims(), key, algorithm="ES256", headers={"kid": kid(keydir)})
        with pytest.raises(Unauthorized, match="does not match"):
            await verifier.verify(token)

    @pytest.mark.parametrize(
        ("overrides", "reason"),
        [
            ({"exp": int(time.time()) - 60}, "expired"),
            ({"aud": "someone-else"}, "(?i)audience"),
            ({"iss": "evil"}, "(?i)issuer"),
            ({"exp": None}, "exp"),
            ({"aud": None}, "aud"),
            ({"iss": None}, "iss"),
            ({"sub": None}, "sub"),
            ({"tenant": None}, "tenant"),
            ({"tenant": "Acme Corp"}, "tenant"),
            ({"tenant": "acme.>"}, "tenant"),
            ({"roles": "admin"}, "roles"),
        ],
    )
    async def test_bad_claims_are_refused(
        self, keydir: Path, verifier: Verifier, overrides: dict[str, Any], reason: str
    ) -> None:
        with pytest.raises(Unauthorized, match=reason):
            await verifier.verify(sign(keydir, claims(**overrides)))

    async def test_garbage_is_refused(self, verifier: Verifier) -> None:
        with pytest.raises(Unauthorized):
            await verifier.verify("not-a-jwt")
