#!/usr/bin/env bash
# Issues the agents' gRPC server certificate from the cluster CA, for the Helm chart's Secret
# agent.tls.secretName (docs/operations.md, "Agent certificates"):
#   bash scripts/agent-cert.sh CA_CERT CA_KEY OUT_DIR HOST_NAME...
# writes OUT_DIR/ca.crt (a copy of CA_CERT), OUT_DIR/tls.crt (an ECDSA P-256 server certificate
# naming every HOST_NAME, valid 365 days) and OUT_DIR/tls.key (mode 0600). The operator checks an
# agent's certificate against its Host name, which the chart sets to the node name: name every node
# that runs an agent. Needs openssl. Tested by tests/chart_agent_cert.rs.
set -euo pipefail
if [[ $# -lt 4 ]]; then
    echo "usage: $0 CA_CERT CA_KEY OUT_DIR HOST_NAME..." >&2
    exit 2
fi
ca_cert="$1" ca_key="$2" out="$3"
shift 3
sans=""
for name in "$@"; do sans="${sans:+$sans,}DNS:$name"; done
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$out/tls.key" -subj "/CN=quiver-agent" -out "$work/agent.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n' \
    "$sans" >"$work/ext"
openssl x509 -req -in "$work/agent.csr" -CA "$ca_cert" -CAkey "$ca_key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 365 -extfile "$work/ext" -out "$out/tls.crt" 2>/dev/null
cp "$ca_cert" "$out/ca.crt"
chmod 0644 "$out/tls.crt" "$out/ca.crt"
echo "wrote $out/ca.crt, $out/tls.crt, $out/tls.key for: $*"
