"""Offline, strict validation of the rendered manifests (scripts/k8s_validate.sh runs it).

`manifests FILE`: every resource of a rendered overlay is validated
- against the Kubernetes API schema of `--kubernetes-version` with kubernetes-validate in
  strict mode (unknown fields are errors), or, for a custom resource, against the strict
  schema in deploy/k8s/schemas/ named `<group>_<version>_<Kind>.schema.yaml`; a resource
  with neither is an error (nothing passes unvalidated);
- against the platform's rules: probes, security context, resources; a Service, an HPA, a
  PDB and a migration Job per service; selectors that select; references that resolve
  (ConfigMaps in the bundle, Secrets in the bundle or provided by `--provided` manifests or
  `--allow-external`); database URL, role, database and password Secret that agree with the
  CloudNativePG cluster; NetworkPolicies that deny by default and admit only the gateway to
  the services; the overlay's profile (dev: one replica; prod: three, anti-affinity, R3,
  production JWT settings).

`nats-values FILE...`: Helm values for the NATS chart, merged in order like `helm -f`,
validated against schemas/nats-values.schema.yaml plus the account rules.

Exit status 0 when everything passed, 1 when something did not, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]
from kubernetes_validate import utils as kv  # type: ignore[import-untyped]

SCHEMAS = Path(__file__).resolve().parent / "schemas"
APP_COMPONENTS = ("service", "gateway")
PART_OF = ("app.kubernetes.io/part-of", "crm")
# Namespaces whose pods may reach the services besides the gateway (Prometheus scraping).
SERVICE_INGRESS_NAMESPACES = ({"crm-platform/monitoring": "allowed"},)

Doc = dict[str, Any]


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    builtin: int = 0
    custom: Counter[str] = field(default_factory=Counter)
    external: dict[str, set[str]] = field(default_factory=dict)
    optional: dict[str, set[str]] = field(default_factory=dict)
    # (Secret/ConfigMap ref, key, referenced by) of every required key reference
    keys: list[tuple[str, str, str]] = field(default_factory=list)
    checks: int = 0

    def error(self, message: str) -> None:
        self.errors.append(message)

    def check(self, ok: bool, message: str) -> bool:
        self.checks += 1
        if not ok:
            self.error(message)
        return ok


def ref(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def load_docs(path: Path) -> list[Doc]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_schema(path: Path) -> Doc:
    with path.open() as f:
        schema: Doc = yaml.safe_load(f)
    return schema


def custom_schema_path(doc: Doc) -> Path:
    group_version = str(doc.get("apiVersion", "")).replace("/", "_")
    return SCHEMAS / f"{group_version}_{doc.get('kind')}.schema.yaml"


def schema_errors(schema: Doc, instance: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ]


# --------------------------------------------------------------------------- schemas


def validate_schemas(docs: list[Doc], version: str, report: Report) -> None:
    for doc in docs:
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            report.error(f"not a Kubernetes object: {str(doc)[:80]}")
            continue
        try:
            kv.validate(doc, version, strict=True)
            report.builtin += 1
            continue
        except kv.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            report.error(f"{ref(doc)}: Kubernetes {version} (strict): {where}: {e.message}")
            continue
        except kv.VersionNotSupportedError as e:
            raise SystemExit(f"kubernetes-validate has no schemas for Kubernetes {version}") from e
        except kv.SchemaNotFoundError:
            pass
        path = custom_schema_path(doc)
        if not path.is_file():
            report.error(
                f"{ref(doc)} ({doc['apiVersion']}): no Kubernetes schema and no "
                f"{path.relative_to(SCHEMAS.parent)}: refusing to pass it unvalidated"
            )
            continue
        errors = schema_errors(load_schema(path), doc)
        for message in errors:
            report.error(f"{ref(doc)}: {path.name}: {message}")
        if not errors:
            report.custom[f"{doc['kind']} ({doc['apiVersion']})"] += 1


# --------------------------------------------------------------------------- helpers


def selector_matches(selector: Doc | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against a label set; an empty
    selector matches everything, a missing one nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def service_selects(svc: Doc, labels: dict[str, str]) -> bool:
    """A Service's selector is a plain label map; an empty or missing one selects nothing
    (such a Service has manually managed endpoints)."""
    selector = svc.get("spec", {}).get("selector")
    return bool(selector) and selector_matches({"matchLabels": selector}, labels)


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec


def pod_labels(doc: Doc) -> dict[str, str]:
    labels: dict[str, str] = (
        doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    )
    return labels


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def component(doc: Doc) -> str | None:
    value: str | None = doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component")
    return value


def containers(doc: Doc) -> list[Doc]:
    spec = pod_spec(doc)
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def env_value(container: Doc, name: str) -> Doc | None:
    for env in container.get("env", []):
        if env.get("name") == name:
            found: Doc = env
            return found
    return None


def config_values(docs: list[Doc], name_prefix: str) -> dict[str, str]:
    """The data of the ConfigMap generated as `name_prefix` (kustomize adds a hash suffix)."""
    for cm in of_kind(docs, "ConfigMap"):
        name = cm["metadata"]["name"]
        if name == name_prefix or re.fullmatch(re.escape(name_prefix) + r"-[a-z0-9]{10}", name):
            data: dict[str, str] = cm.get("data", {})
            return data
    return {}


def data_keys(doc: Doc) -> set[str]:
    """The keys of a Secret or ConfigMap manifest."""
    return set(doc.get("data") or {}) | set(doc.get("stringData") or {})


def walk_pod_templates(docs: list[Doc]) -> Iterator[Doc]:
    for doc in docs:
        if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc


# --------------------------------------------------------------------------- rules


def check_app_deployment(dep: Doc, report: Report) -> None:
    name = ref(dep)
    spec = pod_spec(dep)
    app = next((c for c in spec.get("containers", []) if c.get("name") == "app"), None)
    if not report.check(app is not None, f"{name}: no container named 'app'"):
        return
    assert app is not None
    report.check(
        "replicas" not in dep["spec"],
        f"{name}: spec.replicas is set, but its HorizontalPodAutoscaler owns the count",
    )
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        got = app.get(probe, {}).get("httpGet", {}).get("path")
        report.check(got == path, f"{name}: {probe} must GET {path} (has {got!r})")
    report.check("startupProbe" in app, f"{name}: no startupProbe")
    ports = {p.get("name"): p.get("containerPort") for p in app.get("ports", [])}
    report.check(ports.get("http") == 8000, f"{name}: container port 'http' must be 8000")
    resources = app.get("resources", {})
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            report.check(res in resources.get(kind, {}), f"{name}: resources.{kind}.{res} missing")
    pod_sc, sc = spec.get("securityContext", {}), app.get("securityContext", {})
    report.check(
        sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True,
        f"{name}: runAsNonRoot must be true",
    )
    report.check(sc.get("readOnlyRootFilesystem") is True, f"{name}: root fs not read-only")
    report.check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation")
    report.check(
        "ALL" in sc.get("capabilities", {}).get("drop", []), f"{name}: capabilities not dropped"
    )
    report.check(
        spec.get("automountServiceAccountToken") is False,
        f"{name}: the service account token is mounted",
    )


def check_restricted(doc: Doc, report: Report) -> None:
    """The Pod Security Standard "restricted" for every CRM pod template."""
    spec = pod_spec(doc)
    pod_sc = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        report.check(not spec.get(flag), f"{ref(doc)}: {flag}")
    report.check(
        not any("hostPath" in vol for vol in spec.get("volumes", [])), f"{ref(doc)}: hostPath"
    )
    for c in containers(doc):
        sc = c.get("securityContext", {})
        who = f"{ref(doc)} container {c.get('name')}"
        report.check(
            sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True,
            f"{who}: runAsNonRoot must be true",
        )
        report.check(sc.get("allowPrivilegeEscalation") is False, f"{who}: privilege escalation")
        report.check(not sc.get("privileged"), f"{who}: privileged")
        report.check(
            sc.get("capabilities", {}).get("drop") == ["ALL"]
            and not sc.get("capabilities", {}).get("add"),
            f"{who}: capabilities must drop ALL and add none",
        )
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        report.check(
            seccomp in ("RuntimeDefault", "Localhost"), f"{who}: seccompProfile {seccomp!r}"
        )


def check_image(doc: Doc, report: Report) -> None:
    for c in containers(doc):
        image = str(c.get("image", ""))
        report.check(
            "/" in image and ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"),
            f"{ref(doc)}: image {image!r} has no registry or a floating tag (set it in the "
            "overlay's images:)",
        )


def check_service_set(docs: list[Doc], dep: Doc, report: Report) -> None:
    """A Service, an HPA, a PDB and a migration Job for every service Deployment."""
    name, labels = dep["metadata"]["name"], pod_labels(dep)
    services = [s for s in of_kind(docs, "Service") if service_selects(s, labels)]
    report.check(len(services) == 1, f"{ref(dep)}: {len(services)} Services select it (want 1)")
    hpas = [
        h
        for h in of_kind(docs, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"].get("kind") == "Deployment"
        and h["spec"]["scaleTargetRef"].get("name") == name
    ]
    if report.check(len(hpas) == 1, f"{ref(dep)}: {len(hpas)} HPAs target it (want 1)"):
        hpa = hpas[0]
        report.check(hpa["apiVersion"] == "autoscaling/v2", f"{ref(hpa)}: not autoscaling/v2")
        metrics = {m.get("resource", {}).get("name") for m in hpa["spec"].get("metrics", [])}
        report.check("cpu" in metrics, f"{ref(hpa)}: no CPU metric")
        report.check(
            hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"],
            f"{ref(hpa)}: minReplicas > maxReplicas",
        )
    pdbs = [
        p
        for p in of_kind(docs, "PodDisruptionBudget")
        if selector_matches(p["spec"].get("selector"), labels)
    ]
    report.check(len(pdbs) == 1, f"{ref(dep)}: {len(pdbs)} PodDisruptionBudgets (want 1)")
    jobs = [
        j
        for j in of_kind(docs, "Job")
        if component(j) == "migration"
        and j["metadata"].get("labels", {}).get("app.kubernetes.io/name") == name
    ]
    if not report.check(len(jobs) == 1, f"{ref(dep)}: {len(jobs)} migration Jobs (want 1)"):
        return
    job = jobs[0]
    app = next(c for c in pod_spec(dep)["containers"] if c["name"] == "app")
    migrate = pod_spec(job)["containers"][0]
    report.check(
        migrate.get("image") == app.get("image"),
        f"{ref(job)}: image {migrate.get('image')} differs from {ref(dep)}'s {app.get('image')}",
    )
    report.check(
        "/app/migrate.py" in migrate.get("command", []) and "upgrade" in migrate["command"],
        f"{ref(job)}: does not run /app/migrate.py upgrade",
    )
    report.check(
        pod_spec(job).get("restartPolicy") in ("Never", "OnFailure"),
        f"{ref(job)}: restartPolicy",
    )
    var = f"{name.upper().replace('-', '_')}_DATABASE_URL"
    for what in (var, "PGPASSWORD"):
        report.check(
            env_value(app, what) is not None and env_value(app, what) == env_value(migrate, what),
            f"{ref(job)}: {what} missing or different from {ref(dep)}'s",
        )


def check_selectors(docs: list[Doc], report: Report) -> None:
    templates = [pod_labels(d) for d in of_kind(docs, "Deployment")]
    for svc in of_kind(docs, "Service"):
        report.check(
            any(service_selects(svc, t) for t in templates),
            f"{ref(svc)}: its selector matches no Deployment's pods",
        )
        ports = [p.get("targetPort") for p in svc["spec"].get("ports", [])]
        report.check(bool(ports), f"{ref(svc)}: no ports")
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        report.check(
            hpa["spec"]["scaleTargetRef"].get("name") in deployments,
            f"{ref(hpa)}: targets a Deployment that does not exist",
        )
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        report.check(
            any(selector_matches(pdb["spec"].get("selector"), t) for t in templates),
            f"{ref(pdb)}: selects no pods",
        )
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    for ing in of_kind(docs, "Ingress"):
        for rule in ing["spec"].get("rules", []):
            for item in rule.get("http", {}).get("paths", []):
                backend = item["backend"]["service"]
                target = services.get(backend["name"])
                if report.check(target is not None, f"{ref(ing)}: no Service {backend['name']}"):
                    assert target is not None
                    names = {p.get("name") for p in target["spec"]["ports"]}
                    numbers = {p.get("port") for p in target["spec"]["ports"]}
                    port = backend["port"]
                    report.check(
                        port.get("name") in names or port.get("number") in numbers,
                        f"{ref(ing)}: Service {backend['name']} has no port {port}",
                    )


def check_references(docs: list[Doc], report: Report) -> None:
    """ConfigMaps must be in the bundle (unless optional); Secrets not in the bundle are
    collected as external, to be provided before apply."""
    in_bundle = {(d["kind"], d["metadata"]["name"]) for d in docs if "metadata" in d}

    def need(kind: str, name: str, who: str, optional: bool = False) -> None:
        if (kind, name) in in_bundle:
            return
        if optional:
            report.optional.setdefault(f"{kind}/{name}", set()).add(who)
        elif kind == "ConfigMap":
            report.error(f"{who}: ConfigMap {name} is not in the bundle")
        else:
            report.external.setdefault(f"{kind}/{name}", set()).add(who)

    for doc in walk_pod_templates(docs):
        who = ref(doc)
        for c in containers(doc):
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    cm = src["configMapRef"]
                    need("ConfigMap", cm["name"], who, cm.get("optional", False))
                if "secretRef" in src:
                    need(
                        "Secret",
                        src["secretRef"]["name"],
                        who,
                        src["secretRef"].get("optional", False),
                    )
            for env in c.get("env", []):
                vf = env.get("valueFrom", {})
                if "secretKeyRef" in vf:
                    key_ref = vf["secretKeyRef"]
                    need("Secret", key_ref["name"], who, key_ref.get("optional", False))
                    if not key_ref.get("optional", False):
                        report.keys.append((f"Secret/{key_ref['name']}", key_ref["key"], who))
                if "configMapKeyRef" in vf:
                    need(
                        "ConfigMap",
                        vf["configMapKeyRef"]["name"],
                        who,
                        vf["configMapKeyRef"].get("optional", False),
                    )
        for vol in pod_spec(doc).get("volumes", []):
            if "configMap" in vol:
                need(
                    "ConfigMap",
                    vol["configMap"]["name"],
                    who,
                    vol["configMap"].get("optional", False),
                )
            if "secret" in vol:
                need(
                    "Secret", vol["secret"]["secretName"], who, vol["secret"].get("optional", False)
                )
    for ing in of_kind(docs, "Ingress"):
        for tls in ing["spec"].get("tls", []):
            need("Secret", tls["secretName"], ref(ing))
    for cluster in of_kind(docs, "Cluster"):
        for role in cluster["spec"].get("managed", {}).get("roles", []):
            if "passwordSecret" in role:
                need("Secret", role["passwordSecret"]["name"], ref(cluster))
        initdb = cluster["spec"].get("bootstrap", {}).get("initdb", {})
        if "secret" in initdb:
            need("Secret", initdb["secret"]["name"], ref(cluster))


def check_postgres(docs: list[Doc], apps: list[Doc], report: Report) -> None:
    clusters = {c["metadata"]["name"]: c for c in of_kind(docs, "Cluster")}
    if not report.check(bool(clusters), "no CloudNativePG Cluster in the bundle"):
        return
    roles: dict[tuple[str, str], str | None] = {}
    for cname, cluster in clusters.items():
        for role in cluster["spec"].get("managed", {}).get("roles", []):
            secret = role.get("passwordSecret", {}).get("name")
            roles[(cname, role["name"])] = secret
        initdb = cluster["spec"].get("bootstrap", {}).get("initdb", {})
        if "owner" in initdb:
            roles.setdefault((cname, initdb["owner"]), initdb.get("secret", {}).get("name"))
    databases: dict[tuple[str, str], str] = {}
    for db in of_kind(docs, "Database"):
        cname = db["spec"]["cluster"]["name"]
        report.check(cname in clusters, f"{ref(db)}: no Cluster {cname}")
        report.check(
            (cname, db["spec"]["owner"]) in roles,
            f"{ref(db)}: owner {db['spec']['owner']} is not a role of Cluster {cname}",
        )
        databases[(cname, db["spec"]["name"])] = db["spec"]["owner"]
    owners = Counter(databases.values())
    report.check(
        all(n == 1 for n in owners.values()), f"a role owns several databases: {dict(owners)}"
    )
    for dep in apps:
        name = dep["metadata"]["name"]
        app = next(c for c in pod_spec(dep)["containers"] if c["name"] == "app")
        var = env_value(app, f"{name.upper().replace('-', '_')}_DATABASE_URL")
        if not report.check(var is not None and "value" in var, f"{ref(dep)}: no database URL"):
            continue
        assert var is not None
        url = urlsplit(var["value"])
        host = (url.hostname or "").split(".")[0]
        cname = host.removesuffix("-rw")
        report.check(
            host.endswith("-rw") and cname in clusters,
            f"{ref(dep)}: database host {url.hostname} is not a Cluster's -rw Service",
        )
        dbname = url.path.lstrip("/")
        owner = databases.get((cname, dbname))
        report.check(owner is not None, f"{ref(dep)}: database {dbname} is not declared")
        report.check(
            owner == url.username, f"{ref(dep)}: connects as {url.username}, {dbname} is {owner}'s"
        )
        report.check(url.password is None, f"{ref(dep)}: a password is written in the URL")
        pw = env_value(app, "PGPASSWORD") or {}
        secret = pw.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
        report.check(
            secret is not None and roles.get((cname, url.username or "")) == secret,
            f"{ref(dep)}: PGPASSWORD comes from {secret}, the role's password from "
            f"{roles.get((cname, url.username or ''))}",
        )
    report.check(
        any(
            peer.get("podSelector", {}).get("matchLabels", {}).get("cnpg.io/cluster") in clusters
            for np in of_kind(docs, "NetworkPolicy")
            for rule in np["spec"].get("egress", [])
            for peer in rule.get("to", [])
        ),
        "no NetworkPolicy lets the services reach the PostgreSQL cluster",
    )


def check_network_policies(docs: list[Doc], apps: list[Doc], report: Report) -> None:
    policies = of_kind(docs, "NetworkPolicy")
    crm_pods = [(ref(d), pod_labels(d)) for d in walk_pod_templates(docs)]
    for who, labels in crm_pods:
        report.check(
            labels.get(PART_OF[0]) == PART_OF[1], f"{who}: pods lack the label {PART_OF[0]}=crm"
        )
    deny = [
        p
        for p in policies
        if set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    for who, labels in crm_pods:
        report.check(
            any(selector_matches(p["spec"]["podSelector"], labels) for p in deny),
            f"{who}: no default-deny NetworkPolicy selects its pods",
        )
    gateways = [pod_labels(d) for d in apps if component(d) == "gateway"]
    services = [pod_labels(d) for d in apps if component(d) == "service"]
    for p in policies:
        selected = [s for s in services if selector_matches(p["spec"]["podSelector"], s)]
        if not selected:
            continue
        for rule in p["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "ipBlock" in peer:
                    report.error(f"{ref(p)}: services admit an ipBlock")
                elif "namespaceSelector" in peer:
                    report.check(
                        peer["namespaceSelector"].get("matchLabels") in SERVICE_INGRESS_NAMESPACES,
                        f"{ref(p)}: services admit namespace {peer['namespaceSelector']}",
                    )
                else:
                    sel = peer.get("podSelector")
                    report.check(
                        any(selector_matches(sel, g) for g in gateways)
                        and not any(selector_matches(sel, s) for s in services),
                        f"{ref(p)}: services admit pods other than the gateway: {sel}",
                    )
    for who, labels in ((ref(d), pod_labels(d)) for d in apps):
        egress_to = [
            peer
            for p in policies
            if selector_matches(p["spec"]["podSelector"], labels)
            for rule in p["spec"].get("egress", [])
            for peer in rule.get("to", [])
        ]
        report.check(
            any(
                "cnpg.io/cluster" in (e.get("podSelector") or {}).get("matchLabels", {})
                for e in egress_to
            ),
            f"{who}: no egress to PostgreSQL",
        )
        report.check(
            any(
                (e.get("podSelector") or {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                == "nats"
                for e in egress_to
            ),
            f"{who}: no egress to NATS",
        )


def check_gateway(docs: list[Doc], apps: list[Doc], report: Report) -> None:
    gateway = next((d for d in apps if component(d) == "gateway"), None)
    if not report.check(gateway is not None, "no gateway Deployment"):
        return
    assert gateway is not None
    app = next(c for c in pod_spec(gateway)["containers"] if c["name"] == "app")
    raw = (env_value(app, "GATEWAY_UPSTREAMS") or {}).get("value", "{}")
    try:
        upstreams: dict[str, str] = json.loads(raw)
    except json.JSONDecodeError as e:
        report.error(f"{ref(gateway)}: GATEWAY_UPSTREAMS is not JSON: {e}")
        return
    services = {s["metadata"]["name"] for s in of_kind(docs, "Service")}
    for name, url in upstreams.items():
        host = urlsplit(url).hostname or ""
        report.check(host.split(".")[0] in services, f"GATEWAY_UPSTREAMS {name}: no Service {host}")
    for dep in apps:
        if component(dep) == "service":
            report.check(
                dep["metadata"]["name"] in upstreams,
                f"GATEWAY_UPSTREAMS does not route to {ref(dep)}",
            )
    report.check(bool(of_kind(docs, "Ingress")), "no Ingress for the gateway")


def check_profile(docs: list[Doc], apps: list[Doc], profile: str, report: Report) -> None:
    config = config_values(docs, "crm-config")
    env = config.get("CRM_ENV")
    if env == "prod":  # the rule of chassis.settings.ServiceSettings
        report.check(
            bool(config.get("CRM_JWKS_URL") or config.get("CRM_JWKS_FILE")),
            "CRM_ENV=prod needs CRM_JWKS_URL or CRM_JWKS_FILE",
        )
        report.check(
            config.get("CRM_JWT_ISSUER", "crm-dev") != "crm-dev",
            "CRM_ENV=prod needs a CRM_JWT_ISSUER other than crm-dev",
        )
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    clusters = of_kind(docs, "Cluster")
    if profile == "dev":
        report.check(env == "dev", f"dev overlay: CRM_ENV is {env!r}")
        report.check(config.get("CRM_STREAM_REPLICAS") == "1", "dev overlay: streams not R1")
        for h in hpas:
            report.check(
                h["spec"].get("minReplicas") == 1 and h["spec"]["maxReplicas"] == 1,
                f"{ref(h)}: dev runs exactly one replica",
            )
        for c in clusters:
            report.check(c["spec"]["instances"] == 1, f"{ref(c)}: dev runs one instance")
    elif profile == "prod":
        report.check(env == "prod", f"prod overlay: CRM_ENV is {env!r}")
        report.check(config.get("CRM_STREAM_REPLICAS") == "3", "prod overlay: streams not R3")
        for h in hpas:
            report.check(h["spec"].get("minReplicas", 1) >= 3, f"{ref(h)}: fewer than 3 replicas")
        for dep in apps:
            report.check(
                "podAntiAffinity" in pod_spec(dep).get("affinity", {}),
                f"{ref(dep)}: no pod anti-affinity",
            )
        for c in clusters:
            report.check(c["spec"]["instances"] >= 3, f"{ref(c)}: fewer than 3 instances")
            report.check(
                "synchronous" in c["spec"].get("postgresql", {}),
                f"{ref(c)}: no synchronous replication",
            )


def validate_manifests(
    docs: list[Doc],
    version: str,
    profile: str,
    provided: Mapping[str, set[str]],
    allowed: set[str],
    expected_apps: set[str] | None = None,
) -> Report:
    report = Report()
    validate_schemas(docs, version, report)
    if report.errors:  # the rules below assume well-formed objects
        return report
    apps = [d for d in of_kind(docs, "Deployment") if component(d) in APP_COMPONENTS]
    report.check(bool(apps), "no service Deployments")
    if expected_apps is not None:
        names = {d["metadata"]["name"] for d in apps}
        report.check(
            names == expected_apps,
            f"service Deployments {sorted(names)} are not the workspace's services "
            f"{sorted(expected_apps)} (missing: {sorted(expected_apps - names)}, unknown: "
            f"{sorted(names - expected_apps)})",
        )
    for dep in apps:
        check_app_deployment(dep, report)
        check_service_set(docs, dep, report)
    for doc in walk_pod_templates(docs):
        check_image(doc, report)
        check_restricted(doc, report)
    check_selectors(docs, report)
    check_references(docs, report)
    check_postgres(docs, apps, report)
    check_network_policies(docs, apps, report)
    check_gateway(docs, apps, report)
    check_profile(docs, apps, profile, report)
    for name, key, who in report.keys:
        if name in provided:
            report.check(key in provided[name], f"{who}: {name} (as created) has no key {key!r}")
    for name in sorted(report.external):
        report.check(
            name in provided or name.split("/", 1)[1] in allowed,
            f"{name} is referenced by {', '.join(sorted(report.external[name]))} but "
            "neither in the bundle, nor provided (--provided), nor allowed (--allow-external)",
        )
    return report


# --------------------------------------------------------------------------- NATS values


def deep_merge(base: Any, override: Any) -> Any:
    """Helm's values merge: maps merge key by key, anything else replaces; null deletes."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = deep_merge(base.get(key), value)
        return merged
    return override


def validate_nats_values(
    values: Doc, profile: str, provided: Mapping[str, set[str]] | None = None
) -> Report:
    report = Report()
    schema = SCHEMAS / "nats-values.schema.yaml"
    for message in schema_errors(load_schema(schema), values):
        report.error(f"nats values: {schema.name}: {message}")
    report.custom["NATS Helm values"] += 1
    if report.errors:
        return report
    config = values["config"]
    cluster = config.get("cluster", {})
    if profile == "prod":
        report.check(
            cluster.get("enabled") is True and cluster.get("replicas", 0) >= 3,
            "nats values: prod needs a clustered NATS of at least 3 nodes (R3 streams)",
        )
    accounts: Doc = config["merge"]["accounts"]
    exports = accounts["CRM"].get("exports", [])
    env = values["container"].get("env", {})
    for var, source in env.items():
        key_ref = (
            source.get("valueFrom", {}).get("secretKeyRef") if isinstance(source, dict) else None
        )
        if key_ref and provided is not None:
            secret = f"Secret/{key_ref['name']}"
            report.check(
                key_ref.get("key") in provided.get(secret, set()),
                f"nats values: ${var}: {secret} (as created) has no key {key_ref.get('key')!r}",
            )
    for account, body in accounts.items():
        for user in body.get("users", []):
            var = str(user["password"])[4:-3]
            report.check(
                isinstance(env.get(var), dict),
                f"nats values: {account} user {user['user']}: ${var} is not taken from a "
                "Secret in container.env",
            )
        if not account.startswith("PARTNER_"):
            continue
        imported = {i["stream"]["subject"] for i in body["imports"]}
        for user in body["users"]:
            allowed = set(user["permissions"]["subscribe"]["allow"])
            report.check(
                allowed <= imported,
                f"nats values: {account}: subscribes to {sorted(allowed - imported)} that it "
                "does not import",
            )
        tenants = {s.split(".")[2] for s in imported}
        report.check(len(tenants) == 1, f"nats values: {account} spans tenants {sorted(tenants)}")
        for subject in imported:
            report.check(
                any(e["stream"] == subject and account in e["accounts"] for e in exports),
                f"nats values: CRM does not export {subject} to {account}",
            )
    return report


# --------------------------------------------------------------------------- CLI


def print_report(title: str, report: Report) -> None:
    for message in report.errors:
        print(f"ERROR {title}: {message}")
    parts = []
    if report.builtin:
        parts.append(f"{report.builtin} resources valid against the Kubernetes schema (strict)")
    if report.custom:
        custom = ", ".join(f"{n} {k}" for k, n in sorted(report.custom.items()))
        parts.append(f"valid against deploy/k8s/schemas: {custom}")
    parts.append(f"{report.checks} rule checks, {len(report.errors)} errors")
    print(f"{'FAIL' if report.errors else 'OK'} {title}: {'; '.join(parts)}")
    for name in sorted(report.external):
        print(f"  external (must exist before apply): {name}")
    for name in sorted(set(report.optional) - set(report.external)):
        print(f"  external, optional (used when present): {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="validate.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("manifests", help="a rendered overlay (kubectl kustomize output)")
    m.add_argument("file", type=Path)
    m.add_argument("--title", default=None)
    m.add_argument("--profile", choices=["dev", "prod", "none"], default="none")
    m.add_argument("--kubernetes-version", default="1.37.0")
    m.add_argument(
        "--provided",
        type=Path,
        action="append",
        default=[],
        help="manifests of objects created outside the overlay (e.g. secrets.sh)",
    )
    m.add_argument(
        "--allow-external",
        action="append",
        default=[],
        help="an object name provided by other means (e.g. cert-manager)",
    )
    m.add_argument(
        "--expect-service",
        action="append",
        default=None,
        help="a service (and the gateway) that must have a Deployment; repeat for each",
    )
    s = sub.add_parser("schemas", help="schema validation only (any manifest file)")
    s.add_argument("file", type=Path)
    s.add_argument("--title", default=None)
    s.add_argument("--kubernetes-version", default="1.37.0")
    n = sub.add_parser("nats-values", help="NATS Helm values, merged in order")
    n.add_argument("files", type=Path, nargs="+")
    n.add_argument("--profile", choices=["dev", "prod", "none"], default="none")
    n.add_argument("--provided", type=Path, action="append", default=[])
    args = parser.parse_args(argv)

    if args.command == "nats-values":
        values: Any = {}
        for path in args.files:
            with path.open() as f:
                values = deep_merge(values, yaml.safe_load(f) or {})
        created = {ref(d): data_keys(d) for path in args.provided for d in load_docs(path)}
        report = validate_nats_values(values, args.profile, created if args.provided else None)
        print_report(" + ".join(str(p) for p in args.files), report)
        return 1 if report.errors else 0

    if args.command == "schemas":
        report = Report()
        validate_schemas(load_docs(args.file), args.kubernetes_version, report)
        print_report(args.title or str(args.file), report)
        return 1 if report.errors else 0

    provided = {ref(d): data_keys(d) for path in args.provided for d in load_docs(path)}
    report = validate_manifests(
        load_docs(args.file),
        args.kubernetes_version,
        args.profile,
        provided,
        set(args.allow_external),
        set(args.expect_service) if args.expect_service else None,
    )
    print_report(args.title or str(args.file), report)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
