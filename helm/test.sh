#!/usr/bin/env bash
# Checks the Helm chart offline (see helm/tests/check_chart.py): lint,
# render, validate against Kubernetes schemas, refuse bad values, and feed
# the rendered config to the real tern-server. Installs helm and
# kubernetes-validate on first use (infra/chart-tools/install.sh).
# Part of `make test`; on its own: cargo build --bin tern-server && helm/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(infra/chart-tools/install.sh | tail -n 2)
HELM=$(sed -n 's/^helm=//p' <<<"$tools")
KUBERNETES_VALIDATE=$(sed -n 's/^kubernetes_validate=//p' <<<"$tools")
TERN_SERVER=${TERN_SERVER:-$(pwd)/target/debug/tern-server}
[ -x "$TERN_SERVER" ] || { echo "$TERN_SERVER not built: cargo build --bin tern-server" >&2; exit 1; }
export HELM KUBERNETES_VALIDATE TERN_SERVER
exec "$(dirname "$KUBERNETES_VALIDATE")/python" helm/tests/check_chart.py
