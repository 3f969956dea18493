"""The rendered overlays configure the services the way their settings classes read them:
every variable the manifests set is a real setting (a typo would be silently ignored by
pydantic-settings), and each service's settings load from exactly that environment, with
the production refusals of dev secrets satisfied."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from chassis.settings import ServiceSettings, load_settings

ROOT = Path(__file__).resolve().parents[3]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
# Variables the manifests set that are not chassis settings.
NOT_SETTINGS = {"PGPASSWORD", "FORWARDED_ALLOW_IPS"}
NOT_SETTINGS_PREFIXES = ("OTEL_",)


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"{service}.settings")
    classes = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, ServiceSettings) and c is not ServiceSettings
    ]
    assert len(classes) == 1, classes
    return classes[0]


def pod_environment(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """The environment a pod of `deployment` gets; Secret values replaced by placeholders."""
    app = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in app.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)
            env.update(cm["data"])
        if "secretRef" in source:
            assert source["secretRef"]["name"] == "crm-nats"
            env["CRM_NATS_URL"] = "nats://crm-services:pw@nats:4222"
    for var in app.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif not var["valueFrom"].get("secretKeyRef", {}).get("optional"):
            env[var["name"]] = f"secret-from-{var['valueFrom']['secretKeyRef']['name']}"
    return env


def apps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") in ("service", "gateway")
    ]


@pytest.fixture(scope="module", params=["dev", "prod"])
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def test_every_variable_is_a_setting_of_some_service(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    deployments = apps(docs)
    fields = {
        d["metadata"]["name"]: set(settings_class(d["metadata"]["name"]).model_fields)
        for d in deployments
    }
    base = set(ServiceSettings.model_fields)
    for dep in deployments:
        for var in pod_environment(docs, dep):
            if var in NOT_SETTINGS or var.startswith(NOT_SETTINGS_PREFIXES):
                continue
            prefix, _, field = var.partition("_")
            name = field.lower()
            if prefix == "CRM":
                assert name in base, f"{var} is not a chassis setting"
            else:
                service = prefix.lower()
                assert service in fields, f"{var}: no service {service}"
                assert name in fields[service], f"{var} is not a setting of {service}"


def test_each_service_loads_its_settings_from_the_pod_environment(
    overlay: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, docs = overlay
    for dep in apps(docs):
        service = dep["metadata"]["name"]
        with monkeypatch.context() as m:
            for key in list(os.environ):
                if key.startswith(("CRM_", f"{service.upper()}_")):
                    m.delenv(key)
            for key, value in pod_environment(docs, dep).items():
                m.setenv(key, value)
            settings = load_settings(settings_class(service), service)
        assert settings.env == profile
        assert settings.database_url == (f"postgresql://crm_{service}@crm-pg-rw:5432/crm_{service}")
        assert settings.nats_url.endswith("@nats:4222")
        assert settings.stream_replicas == (3 if profile == "prod" else 1)
        if profile == "prod":
            assert settings.jwks_url is not None
            assert settings.jwks_url.startswith("https://")
        else:
            assert str(settings.jwks_file) == "/etc/crm/jwks/jwks.json"
        if service == "gateway":
            upstreams = getattr(settings, "upstreams")  # noqa: B009 - GatewaySettings field
            assert set(upstreams) == {d["metadata"]["name"] for d in apps(docs)} - {"gateway"}
            assert all(url == f"http://{name}" for name, url in upstreams.items())
            assert json.loads(pod_environment(docs, dep)["GATEWAY_UPSTREAMS"]) == upstreams


def test_prod_refuses_to_start_without_the_service_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The overlay is what satisfies the settings' prod checks: without the Secret-backed
    variable, campaigns refuses to start (so the manifests must keep providing it)."""
    docs = render("prod")
    campaigns = next(d for d in apps(docs) if d["metadata"]["name"] == "campaigns")
    env = pod_environment(docs, campaigns)
    del env["CAMPAIGNS_SIGNING_SECRET"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CAMPAIGNS_SIGNING_SECRET", raising=False)
    with pytest.raises(ValueError, match="CAMPAIGNS_SIGNING_SECRET"):
        load_settings(settings_class("campaigns"), "campaigns")
