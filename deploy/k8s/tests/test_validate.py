"""deploy/k8s/validate.py: the real overlays pass, and each kind of mistake it exists to catch
fails (so `make k8s-validate` passing means something)."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
VERSION = "1.37.0"


def _load_validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_validate", K8S / "validate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["k8s_validate"] = module
    spec.loader.exec_module(module)
    return module


v = _load_validator()
Docs = list[dict[str, Any]]


def render(overlay: str) -> Docs:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def provided(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    tmp = tmp_path_factory.mktemp("secrets")
    (tmp / "jwks.json").write_text('{"keys": []}')
    out = subprocess.run(
        ["bash", str(K8S / "secrets.sh"), "crm", "--dev-jwks", str(tmp / "jwks.json")],
        env={"DRY_RUN": "1", "KUBECTL": str(KUBECTL), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {v.ref(d): v.data_keys(d) for d in yaml.safe_load_all(out) if d}


@pytest.fixture(scope="module")
def prod() -> Docs:
    return render("prod")


@pytest.fixture(scope="module")
def dev() -> Docs:
    return render("dev")


def run(docs: Docs, profile: str, provided: dict[str, set[str]]) -> Any:
    return v.validate_manifests(docs, VERSION, profile, provided, {"crm-gateway-tls"})


def find(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def app_container(docs: Docs, name: str) -> dict[str, Any]:
    dep = find(docs, "Deployment", name)
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_overlays_pass(overlay: str, provided: dict[str, set[str]]) -> None:
    report = run(render(overlay), overlay, provided)
    assert report.errors == []
    assert report.builtin == 49
    assert sum(report.custom.values()) == 7  # the Cluster and six Databases
    assert report.checks > 300
    assert "Secret/crm-pg-contacts" in report.external


def test_secrets_sh_provides_every_secret_the_overlays_reference(
    prod: Docs, provided: dict[str, set[str]]
) -> None:
    report = run(prod, "prod", provided)
    assert set(report.external) - set(provided) == {"Secret/crm-gateway-tls"}
    assert ("Secret/crm-pg-contacts", "password", "Deployment/contacts") in report.keys


def _edit_container(name: str, **fields: Any) -> Callable[[Docs], None]:
    def edit(docs: Docs) -> None:
        app_container(docs, name).update(fields)

    return edit


def _unknown_kind(docs: Docs) -> None:
    docs.append(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "crm"},
            "spec": {},
        }
    )


def _cluster_typo(docs: Docs) -> None:
    find(docs, "Cluster", "crm-pg")["spec"]["instance"] = 3


def _database_typo(docs: Docs) -> None:
    find(docs, "Database", "crm-contacts")["spec"]["ownr"] = "x"


def _drop_hpa(docs: Docs) -> None:
    docs.remove(find(docs, "HorizontalPodAutoscaler", "contacts"))


def _drop_migration_job(docs: Docs) -> None:
    docs.remove(find(docs, "Job", "tickets-migrate"))


def _undeclared_database(docs: Docs) -> None:
    env = app_container(docs, "pipeline")["env"]
    url = next(e for e in env if e["name"] == "PIPELINE_DATABASE_URL")
    url["value"] = "postgresql://crm_pipeline@crm-pg-rw:5432/crm_pipelines"


def _password_from_other_role(docs: Docs) -> None:
    env = app_container(docs, "contacts")["env"]
    pw = next(e for e in env if e["name"] == "PGPASSWORD")
    pw["valueFrom"]["secretKeyRef"]["name"] = "crm-pg-gateway"


def _services_open_to_all_pods(docs: Docs) -> None:
    policy = find(docs, "NetworkPolicy", "crm-services-ingress")
    policy["spec"]["ingress"][0]["from"] = [{"podSelector": {}}]


def _services_open_to_ip(docs: Docs) -> None:
    policy = find(docs, "NetworkPolicy", "crm-services-ingress")
    policy["spec"]["ingress"].append({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})


def _no_default_deny(docs: Docs) -> None:
    docs.remove(find(docs, "NetworkPolicy", "crm-default-deny"))


def _replicas_in_deployment(docs: Docs) -> None:
    find(docs, "Deployment", "gateway")["spec"]["replicas"] = 3


def _dev_issuer_in_prod(docs: Docs) -> None:
    cm = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("crm-config")
    )
    cm["data"]["CRM_JWT_ISSUER"] = "crm-dev"


def _one_replica_in_prod(docs: Docs) -> None:
    find(docs, "HorizontalPodAutoscaler", "tickets")["spec"]["minReplicas"] = 1


def _no_anti_affinity(docs: Docs) -> None:
    del find(docs, "Deployment", "campaigns")["spec"]["template"]["spec"]["affinity"]


def _unprovided_secret(docs: Docs) -> None:
    app_container(docs, "contacts")["envFrom"].append({"secretRef": {"name": "nobody-makes-me"}})


def _wrong_secret_key(docs: Docs) -> None:
    env = app_container(docs, "tickets")["env"]
    survey = next(e for e in env if e["name"] == "TICKETS_SURVEY_SECRET")
    survey["valueFrom"]["secretKeyRef"]["key"] = "survey_secret"


def _service_selects_nothing(docs: Docs) -> None:
    find(docs, "Service", "commissions")["spec"]["selector"]["app.kubernetes.io/name"] = "x"


def _upstream_missing(docs: Docs) -> None:
    env = app_container(docs, "gateway")["env"]
    up = next(e for e in env if e["name"] == "GATEWAY_UPSTREAMS")
    up["value"] = '{"contacts": "http://contacts"}'


def _job_without_seccomp(docs: Docs) -> None:
    del find(docs, "Job", "contacts-migrate")["spec"]["template"]["spec"]["securityContext"][
        "seccompProfile"
    ]


def _collector_with_capability(docs: Docs) -> None:
    spec = find(docs, "Deployment", "otel-collector")["spec"]["template"]["spec"]
    spec["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]


def _floating_image(docs: Docs) -> None:
    app_container(docs, "contacts")["image"] = "crm-contacts"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_edit_container("contacts", colour="blue"), "Kubernetes 1.37.0 (strict)"),
        (_unknown_kind, "refusing to pass it unvalidated"),
        (_cluster_typo, "postgresql.cnpg.io_v1_Cluster.schema.yaml"),
        (_database_typo, "postgresql.cnpg.io_v1_Database.schema.yaml"),
        (
            _edit_container(
                "contacts", readinessProbe={"httpGet": {"path": "/healthz", "port": "http"}}
            ),
            "readinessProbe must GET /readyz",
        ),
        (_edit_container("pipeline", securityContext={"runAsNonRoot": False}), "runAsNonRoot"),
        (_edit_container("tickets", resources={"requests": {"cpu": "1"}}), "resources."),
        (_drop_hpa, "0 HPAs target it"),
        (_drop_migration_job, "0 migration Jobs"),
        (_undeclared_database, "database crm_pipelines is not declared"),
        (_password_from_other_role, "PGPASSWORD comes from crm-pg-gateway"),
        (_services_open_to_all_pods, "admit pods other than the gateway"),
        (_services_open_to_ip, "admit an ipBlock"),
        (_no_default_deny, "no default-deny NetworkPolicy"),
        (_replicas_in_deployment, "HorizontalPodAutoscaler owns the count"),
        (_dev_issuer_in_prod, "CRM_JWT_ISSUER other than crm-dev"),
        (_one_replica_in_prod, "fewer than 3 replicas"),
        (_no_anti_affinity, "no pod anti-affinity"),
        (_unprovided_secret, "Secret/nobody-makes-me is referenced"),
        (_wrong_secret_key, "Secret/crm-tickets (as created) has no key 'survey_secret'"),
        (_service_selects_nothing, "matches no Deployment's pods"),
        (_upstream_missing, "GATEWAY_UPSTREAMS does not route to Deployment/tickets"),
        (_floating_image, "no registry or a floating tag"),
        (_job_without_seccomp, "Job/contacts-migrate container migrate: seccompProfile None"),
        (_collector_with_capability, "capabilities must drop ALL and add none"),
    ],
)
def test_mistakes_fail(
    prod: Docs, provided: dict[str, set[str]], mutate: Callable[[Docs], None], expected: str
) -> None:
    docs = copy.deepcopy(prod)
    mutate(docs)
    report = run(docs, "prod", provided)
    assert any(expected in e for e in report.errors), report.errors


def test_the_dev_profile_rejects_production_replicas(
    prod: Docs, dev: Docs, provided: dict[str, set[str]]
) -> None:
    errors = run(prod, "dev", provided).errors
    assert any("dev runs exactly one replica" in e for e in errors)
    assert any("dev runs one instance" in e for e in errors)
    assert run(dev, "prod", provided).errors


# --------------------------------------------------------------------------- NATS values


def nats_values(*names: str) -> dict[str, Any]:
    values: Any = {}
    for name in names:
        values = v.deep_merge(values, yaml.safe_load((K8S / "nats" / name).read_text()))
    assert isinstance(values, dict)
    return values


def test_nats_values_pass() -> None:
    assert v.validate_nats_values(nats_values("values.yaml"), "prod").errors == []
    dev = nats_values("values.yaml", "values-dev.yaml")
    assert dev["config"]["cluster"]["enabled"] is False
    assert v.validate_nats_values(dev, "dev").errors == []


def test_nats_passwords_come_from_keys_secrets_sh_creates(provided: dict[str, set[str]]) -> None:
    values = nats_values("values.yaml")
    assert v.validate_nats_values(values, "prod", provided).errors == []
    env = values["container"]["env"]["PARTNER_ACME_PASSWORD"]
    env["valueFrom"]["secretKeyRef"]["key"] = "partner-acme"
    errors = v.validate_nats_values(values, "prod", provided).errors
    assert any("Secret/nats-auth (as created) has no key 'partner-acme'" in e for e in errors)


def test_dev_nats_values_are_not_production() -> None:
    errors = v.validate_nats_values(nats_values("values.yaml", "values-dev.yaml"), "prod").errors
    assert any("at least 3 nodes" in e for e in errors)


def _no_sync(values: dict[str, Any]) -> None:
    del values["config"]["jetstream"]["merge"]["sync_interval"]


def _lazy_sync(values: dict[str, Any]) -> None:
    values["config"]["jetstream"]["merge"]["sync_interval"] = "2m"


def _partner_reads_other_tenant(values: dict[str, Any]) -> None:
    user = values["config"]["merge"]["accounts"]["PARTNER_ACME"]["users"][0]
    user["permissions"]["subscribe"]["allow"].append("crm.*.globex.>")


def _partner_publishes(values: dict[str, Any]) -> None:
    user = values["config"]["merge"]["accounts"]["PARTNER_ACME"]["users"][0]
    user["permissions"]["publish"] = {"allow": ["crm.>"]}


def _partner_reads_everything(values: dict[str, Any]) -> None:
    user = values["config"]["merge"]["accounts"]["PARTNER_ACME"]["users"][0]
    user["permissions"]["subscribe"]["allow"] = ["crm.>"]


def _public_export(values: dict[str, Any]) -> None:
    values["config"]["merge"]["accounts"]["CRM"]["exports"] = [{"stream": "crm.*.acme.>"}]


def _literal_password(values: dict[str, Any]) -> None:
    values["config"]["merge"]["accounts"]["CRM"]["users"][0]["password"] = "hunter2"


def _password_not_from_secret(values: dict[str, Any]) -> None:
    del values["container"]["env"]["CRM_SERVICES_PASSWORD"]


def _typo_key(values: dict[str, Any]) -> None:
    values["podTemplates"] = {}


def _no_pvc(values: dict[str, Any]) -> None:
    values["config"]["jetstream"]["fileStore"]["pvc"]["enabled"] = False


def _old_server(values: dict[str, Any]) -> None:
    values["container"]["image"]["tag"] = "2.10.22-alpine"


def _single_node(values: dict[str, Any]) -> None:
    values["config"]["cluster"]["enabled"] = False


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_no_sync, "sync_interval"),
        (_lazy_sync, "'always' was expected"),
        (_partner_reads_other_tenant, "does not import"),
        (_partner_publishes, "publish"),
        (_partner_reads_everything, "crm.>"),
        (_public_export, "'accounts' is a required property"),
        (_literal_password, "hunter2"),
        (_password_not_from_secret, "$CRM_SERVICES_PASSWORD is not taken from a Secret"),
        (_typo_key, "podTemplates"),
        (_no_pvc, "pvc.enabled"),
        (_old_server, "2.10.22-alpine"),
        (_single_node, "at least 3 nodes"),
    ],
)
def test_nats_mistakes_fail(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    values = nats_values("values.yaml")
    mutate(values)
    errors = v.validate_nats_values(values, "prod").errors
    assert any(expected in e for e in errors), errors


# --------------------------------------------------------------------------- the script


def test_the_script_passes_and_reports_what_it_validated() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "k8s_validate.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK overlays/dev" in result.stdout
    assert "OK overlays/prod" in result.stdout
    assert "1 Cluster (postgresql.cnpg.io/v1), 6 Database (postgresql.cnpg.io/v1)" in result.stdout
    assert "all 2 overlays" in result.stdout


def test_the_script_fails_on_an_unsupported_kubernetes_version() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "k8s_validate.sh")],
        env={"K8S_VERSION": "9.99.0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert "no schemas for Kubernetes 9.99.0" in result.stdout + result.stderr


def test_a_workspace_service_without_manifests_fails(
    prod: Docs, provided: dict[str, set[str]]
) -> None:
    services = {p.name for p in (ROOT / "services").iterdir() if p.is_dir()} | {"gateway"}
    ok = v.validate_manifests(prod, VERSION, "prod", provided, {"crm-gateway-tls"}, services)
    assert ok.errors == []
    report = v.validate_manifests(
        prod, VERSION, "prod", provided, {"crm-gateway-tls"}, services | {"invoices"}
    )
    assert any("missing: ['invoices']" in e for e in report.errors), report.errors
