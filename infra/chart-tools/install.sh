#!/usr/bin/env bash
# The tools that check the Helm chart offline, installed once per machine
# into infra/chart-tools/lib/ (git-ignored) and reused after that:
#   helm                 built from the Go module proxy (`go install`, ~1 min
#                        on 2 cores the first time; Go's caches make it faster)
#   kubernetes-validate  from PyPI, in a virtualenv: strict JSON schemas of the
#                        Kubernetes API for versions 1.25 to 1.37
# Prints the two paths on success: `helm=...` and `kubernetes_validate=...`.
# Change a version here and the next run installs it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../common.sh
. "$HERE/../common.sh"

HELM_VERSION=v3.22.0
KUBERNETES_VALIDATE_VERSION=1.37.0
LIB=$HERE/lib
HELM=$LIB/helm-$HELM_VERSION/helm
VENV=$LIB/venv-$KUBERNETES_VALIDATE_VERSION
KV=$VENV/bin/kubernetes-validate

if [ ! -x "$HELM" ]; then
    command -v go >/dev/null || die "go not found: it builds helm (install Go from the machine's packages)"
    log "building helm $HELM_VERSION with go install (first time on this machine)"
    mkdir -p "$LIB"
    tmp=$LIB/helm-$HELM_VERSION.partial
    rm -rf "$tmp" && mkdir -p "$tmp"
    GOBIN=$tmp go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed"
    rm -rf "$LIB/helm-$HELM_VERSION" && mv "$tmp" "$LIB/helm-$HELM_VERSION"
fi

if [ ! -x "$KV" ]; then
    command -v python3 >/dev/null || die "python3 not found: it runs kubernetes-validate"
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" || die "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION failed"
fi

echo "helm=$HELM"
echo "kubernetes_validate=$KV"
