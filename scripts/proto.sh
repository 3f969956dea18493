#!/usr/bin/env bash
# Event contracts: generate the typed Python package, lint, check freshness, check breaking.
#
#   scripts/proto.sh gen       regenerate proto/src/crm from proto/crm/**/*.proto
#   scripts/proto.sh lint      buf lint
#   scripts/proto.sh check     fail when proto/src/crm differs from a fresh generation
#   scripts/proto.sh breaking  buf breaking against ${BUF_AGAINST:-HEAD~1}
#
# Run from the repository root. PY and BUF choose the tools (default: the uv venv).
set -euo pipefail

PY="${PY:-.venv/bin/python}"
BUF="${BUF:-.venv/bin/buf}"
PROTO_DIR="proto"
OUT_DIR="proto/src"
# Files in proto/src/crm that protoc does not write (asyncapi.json comes from
# scripts/asyncapi.py, checked by its --check): never wiped by gen, not compared by check.
HANDWRITTEN=(__init__.py registry.py asyncapi.json)

die() {
    echo "proto.sh: $*" >&2
    exit 1
}

[[ -d "$PROTO_DIR/crm" ]] || die "run from the repository root (no $PROTO_DIR/crm here)"

# Make tool paths absolute so they still work after a cd; bare names are looked up on PATH.
abspath() {
    if [[ "$1" == */* && -d "$(dirname "$1")" ]]; then
        echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
    else
        echo "$1"
    fi
}
PY="$(abspath "$PY")"
BUF="$(abspath "$BUF")"

# generate DEST: write the generated package crm/ (pb2 modules, .pyi stubs, __init__.py of
# every generated subpackage, py.typed) under DEST. DEST/crm must hold no generated files.
generate() {
    local dest="$1"
    local wkt scripts
    # Well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    wkt="$("$PY" -c 'import os, grpc_tools; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
    # protoc-gen-mypy lives next to the interpreter's scripts, which may not be on PATH.
    scripts="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    [[ -x "$scripts/protoc-gen-mypy" ]] || die "protoc-gen-mypy not found in $scripts (install mypy-protobuf)"

    local files=()
    mapfile -t files < <(find "$PROTO_DIR/crm" -type f -name '*.proto' | LC_ALL=C sort)
    ((${#files[@]} > 0)) || die "no .proto files under $PROTO_DIR/crm"

    mkdir -p "$dest"
    "$PY" -m grpc_tools.protoc \
        -I "$PROTO_DIR" \
        -I "$wkt" \
        --plugin="protoc-gen-mypy=$scripts/protoc-gen-mypy" \
        --python_out="$dest" \
        --mypy_out="quiet:$dest" \
        "${files[@]}"

    # Every generated subpackage gets an (empty) __init__.py; crm/__init__.py is hand-written.
    local dir
    while IFS= read -r dir; do
        [[ "$dir" == "$dest/crm" ]] && continue
        : >"$dir/__init__.py"
    done < <(find "$dest/crm" -type d ! -name __pycache__ | LC_ALL=C sort)
    : >"$dest/crm/py.typed"
}

# Remove every generated file under proto/src/crm, keeping the hand-written ones.
wipe() {
    local crm="$OUT_DIR/crm" name keep entry h
    [[ -d "$crm" ]] || return 0
    for entry in "$crm"/* "$crm"/.[!.]*; do
        [[ -e "$entry" ]] || continue
        name="$(basename "$entry")"
        keep=0
        for h in "${HANDWRITTEN[@]}"; do
            [[ "$name" == "$h" ]] && keep=1
        done
        ((keep)) || rm -rf -- "$entry"
    done
}

cmd_gen() {
    wipe
    generate "$OUT_DIR"
    echo "generated $OUT_DIR/crm"
}

cmd_lint() {
    (cd "$PROTO_DIR" && "$BUF" lint)
    echo "buf lint: ok"
}

cmd_check() {
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -rf -- '$tmp'" EXIT
    generate "$tmp"
    # Hand-written files are not generated: copy them so that diff ignores them.
    local h
    for h in "${HANDWRITTEN[@]}"; do
        if [[ -e "$OUT_DIR/crm/$h" ]]; then
            cp -- "$OUT_DIR/crm/$h" "$tmp/crm/$h"
        fi
    done
    if ! diff -r -x __pycache__ "$tmp/crm" "$OUT_DIR/crm"; then
        echo "generated code is stale: run make proto" >&2
        exit 1
    fi
    echo "generated code is up to date"
}

cmd_breaking() {
    local against="${BUF_AGAINST:-HEAD~1}"
    if ! git rev-parse --verify --quiet "${against}^{commit}" >/dev/null; then
        # Only the default ref may be missing, and only in a full clone whose HEAD has no
        # parent (the first commit, or no commit yet); anything else would hide a check.
        if [[ -n "${BUF_AGAINST:-}" ]]; then
            die "BUF_AGAINST=$against is not a commit"
        fi
        if [[ "$(git rev-parse --is-shallow-repository 2>/dev/null)" == true ]]; then
            die "$against is missing from this shallow clone: fetch more history (e.g. fetch-depth: 2)"
        fi
        echo "buf breaking: skipped (no previous commit)"
        return 0
    fi
    if ! git cat-file -e "${against}:proto/buf.yaml" 2>/dev/null; then
        echo "buf breaking: skipped ($against has no proto/buf.yaml)"
        return 0
    fi
    "$BUF" breaking "$PROTO_DIR" --against ".git#ref=${against},subdir=proto"
    echo "buf breaking: no breaking changes against $against"
}

usage() {
    echo "usage: $0 {gen|lint|check|breaking}" >&2
    exit 2
}

(($# == 1)) || usage
case "$1" in
    gen) cmd_gen ;;
    lint) cmd_lint ;;
    check) cmd_check ;;
    breaking) cmd_breaking ;;
    *) usage ;;
esac
