#!/usr/bin/env bash
# Create the Secrets the manifests reference but never contain, in namespace $1:
#
#   crm-pg-<service>  kubernetes.io/basic-auth (username crm_<service>, random password):
#                     the CloudNativePG operator sets each role's password from it
#                     (postgres/cluster.yaml) and the service reads it as PGPASSWORD
#   nats-auth         the NATS account passwords (nats/values.yaml reads them as env vars)
#   crm-nats          CRM_NATS_URL for the services: the crm-services user of the CRM account
#   crm-campaigns     signing-secret (tracking/unsubscribe links); smtp-username and
#                     smtp-password when SMTP_USERNAME/SMTP_PASSWORD are set
#   crm-tickets       survey-secret (CSAT/NPS links)
#   crm-jwks          (ConfigMap, dev only, with --dev-jwks FILE) the public keys of the
#                     local dev key pair, mounted at /etc/crm/jwks (CRM_JWKS_FILE)
#
# Idempotent: an existing Secret is never overwritten (rotate a password by editing the
# Secret: the operator and the pods pick it up). Passwords are random hex (URL-safe).
#
#   bash deploy/k8s/secrets.sh crm
#   bash deploy/k8s/secrets.sh crm-dev --dev-jwks .data/jwt/jwks.json
#   DRY_RUN=1 bash deploy/k8s/secrets.sh crm   # print the manifests, touch no cluster
set -euo pipefail

KUBECTL=${KUBECTL:-kubectl}
NS=${1:?usage: secrets.sh NAMESPACE [--dev-jwks FILE]}
shift
DEV_JWKS=""
if [[ ${1:-} == "--dev-jwks" ]]; then
    DEV_JWKS=${2:?--dev-jwks needs a file}
fi
SERVICES=(contacts pipeline tickets commissions campaigns gateway)
PARTNERS=(acme)  # one NATS partner account per tenant, as in nats/values.yaml

password() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

exists() {
    [[ -z ${DRY_RUN:-} ]] && "$KUBECTL" -n "$NS" get "$1" "$2" >/dev/null 2>&1
}

apply() {  # reads a manifest on stdin
    if [[ -n ${DRY_RUN:-} ]]; then
        echo "---"
        cat
    else
        "$KUBECTL" -n "$NS" apply -f -
    fi
}

for svc in "${SERVICES[@]}"; do
    if exists secret "crm-pg-$svc"; then
        echo "secret crm-pg-$svc exists, kept" >&2
        continue
    fi
    "$KUBECTL" create secret generic "crm-pg-$svc" -n "$NS" --type=kubernetes.io/basic-auth \
        --from-literal=username="crm_$svc" --from-literal=password="$(password)" \
        --dry-run=client -o yaml | apply
done

if exists secret nats-auth; then
    echo "secret nats-auth exists, kept" >&2
    NATS_PASSWORD=$("$KUBECTL" -n "$NS" get secret nats-auth \
        -o jsonpath='{.data.crm-services-password}' | base64 -d)
else
    NATS_PASSWORD=$(password)
    partner_args=()
    for p in "${PARTNERS[@]}"; do
        partner_args+=(--from-literal="partner-$p-password=$(password)")
    done
    "$KUBECTL" create secret generic nats-auth -n "$NS" \
        --from-literal=sys-password="$(password)" \
        --from-literal=crm-services-password="$NATS_PASSWORD" \
        "${partner_args[@]}" --dry-run=client -o yaml | apply
fi

if exists secret crm-nats; then
    echo "secret crm-nats exists, kept" >&2
else
    "$KUBECTL" create secret generic crm-nats -n "$NS" \
        --from-literal=CRM_NATS_URL="nats://crm-services:$NATS_PASSWORD@nats:4222" \
        --dry-run=client -o yaml | apply
fi

# Service secrets the chassis refuses to run in prod without (dev defaults are public).
if exists secret crm-campaigns; then
    echo "secret crm-campaigns exists, kept" >&2
else
    smtp_args=()
    if [[ -n ${SMTP_USERNAME:-} ]]; then  # the SMTP relay's credentials, when it needs them
        smtp_args=(--from-literal=smtp-username="$SMTP_USERNAME"
            --from-literal=smtp-password="${SMTP_PASSWORD:?SMTP_PASSWORD with SMTP_USERNAME}")
    fi
    "$KUBECTL" create secret generic crm-campaigns -n "$NS" \
        --from-literal=signing-secret="$(password)" "${smtp_args[@]}" \
        --dry-run=client -o yaml | apply
fi
if exists secret crm-tickets; then
    echo "secret crm-tickets exists, kept" >&2
else
    "$KUBECTL" create secret generic crm-tickets -n "$NS" \
        --from-literal=survey-secret="$(password)" --dry-run=client -o yaml | apply
fi

if [[ -n $DEV_JWKS ]]; then
    "$KUBECTL" create configmap crm-jwks -n "$NS" --from-file=jwks.json="$DEV_JWKS" \
        --dry-run=client -o yaml | apply
fi
