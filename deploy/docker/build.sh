#!/usr/bin/env bash
# Build (and with PUSH=1 push) the image of every service and the gateway from the
# repository root, all from deploy/docker/Dockerfile:
#
#   REGISTRY=registry.example.com/crm TAG=0.1.0 bash deploy/docker/build.sh
#   REGISTRY=... TAG=... PUSH=1 bash deploy/docker/build.sh contacts gateway
#   DRY_RUN=1 bash deploy/docker/build.sh     # print the commands only
#
# Without arguments: every workspace member under services/, then the gateway.
set -euo pipefail
cd "$(dirname "$0")/../.."

REGISTRY=${REGISTRY:-localhost:5001}
TAG=${TAG:-dev}
DOCKER=${DOCKER:-docker}
run() { if [[ -n ${DRY_RUN:-} ]]; then echo "$*"; else "$@"; fi; }

if [[ $# -gt 0 ]]; then
    services=("$@")
else
    services=()
    for dir in services/*/; do services+=("$(basename "$dir")"); done
    services+=(gateway)
fi

for svc in "${services[@]}"; do
    member=services/$svc
    [[ $svc == gateway ]] && member=gateway
    if [[ ! -f $member/pyproject.toml ]]; then
        echo "no workspace member $member for service $svc" >&2
        exit 2
    fi
    image=$REGISTRY/crm-$svc:$TAG
    run "$DOCKER" build -f deploy/docker/Dockerfile --build-arg SERVICE="$svc" \
        --build-arg MEMBER="$member" -t "$image" .
    if [[ -n ${PUSH:-} ]]; then
        run "$DOCKER" push "$image"
    fi
done
