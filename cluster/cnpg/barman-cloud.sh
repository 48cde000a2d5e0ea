#!/usr/bin/env bash
# Install CloudNativePG's Barman Cloud plugin on the local cluster, beside the operator (cnpg-system), as its
# release manifest does on any cluster (the manifest.yaml its Go module ships, by exact version), with three
# changes:
#   - the image is the local build (build.sh barman-cloud, images.sh barman-cloud) for both the plugin and the
#     sidecar it injects into PostgreSQL pods (SIDECAR_IMAGE), pulled IfNotPresent (there is no registry here);
#   - cert-manager is not used: its two Certificates and its Issuer are left out, and the two Secrets they
#     would make (barman-cloud-server-tls, barman-cloud-client-tls) are made here with openssl, self-signed,
#     as `kubernetes.io/tls` Secrets. That is enough: the operator trusts exactly the server certificate in
#     the server Secret (it is its own root) and presents the client one, which the plugin trusts the same way.
#     On a real cluster, use cert-manager as the plugin's docs say, for rotation;
#   - the plugin logs at info level, not the manifest's debug.
#
#   cluster/cnpg/barman-cloud.sh install    the Secrets, the manifest, wait for the plugin, and check that the
#                                           operator registered it
#   cluster/cnpg/barman-cloud.sh manifest   print the manifest that install applies
set -euo pipefail
# shellcheck source=cluster/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/common.sh"
PLUGIN_NS=cnpg-system
PLUGIN_NAME=barman-cloud.cloudnative-pg.io

manifest() {
  local file
  file=$(module_file "github.com/cloudnative-pg/plugin-barman-cloud@$BARMAN_CLOUD_PLUGIN_VERSION" manifest.yaml) || exit 1
  IMAGE=$IMG_BARMAN_CLOUD python3 - "$file" <<'EOF'
import base64, os, sys
import yaml

image = os.environ["IMAGE"]
out = []
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc or doc.get("apiVersion", "").startswith("cert-manager.io/"):
        continue
    kind = doc["kind"]
    if kind == "Secret" and "SIDECAR_IMAGE" in doc.get("data", {}):
        doc["data"]["SIDECAR_IMAGE"] = base64.b64encode(image.encode()).decode()
    if kind == "Deployment":
        for c in doc["spec"]["template"]["spec"]["containers"]:
            c["image"] = image
            c["imagePullPolicy"] = "IfNotPresent"
            c["args"] = [a for a in c.get("args", []) if not a.startswith("--log-level=")] + ["--log-level=info"]
    out.append(doc)
kinds = {d["kind"] for d in out}
for want in ("CustomResourceDefinition", "Deployment", "Service", "Secret"):
    if want not in kinds:
        sys.exit(f"the plugin's manifest has no {want}: its layout changed")
sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False))
EOF
}

# A self-signed certificate as a kubernetes.io/tls Secret: tls_secret NAME CN EXTENDED_KEY_USAGE [DNS names...]
tls_secret() {
  local name=$1 cn=$2 eku=$3; shift 3
  if kc -n "$PLUGIN_NS" get secret "$name" >/dev/null 2>&1; then return; fi
  local w san="" n; w=$(mktemp -d)
  for n in "$@"; do san+="${san:+,}DNS:$n"; done
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 -subj "/CN=$cn" \
    -keyout "$w/tls.key" -out "$w/tls.crt" -addext "extendedKeyUsage=$eku" -addext "basicConstraints=critical,CA:FALSE" \
    ${san:+-addext "subjectAltName=$san"} 2>/dev/null || { rm -rf "$w"; die "openssl could not make $name"; }
  kc -n "$PLUGIN_NS" create secret tls "$name" --cert "$w/tls.crt" --key "$w/tls.key" >/dev/null
  rm -rf "$w"
  log "Secret $PLUGIN_NS/$name: a self-signed certificate for $cn"
}

install() {
  local work; work=$(mktemp -d)
  # shellcheck disable=SC2064 # expanded now, on purpose
  trap "rm -rf '$work'" RETURN
  kc get deployment -n "$PLUGIN_NS" cnpg-controller-manager >/dev/null 2>&1 \
    || die "the CloudNativePG operator is not installed in $PLUGIN_NS (cluster/cnpg/operator.sh install first)"
  manifest >"$work/plugin.yaml"
  if grep -nE '^\s*(- )?image: ' "$work/plugin.yaml" | grep -v "$IMG_BARMAN_CLOUD"; then
    die "the plugin's manifest names an image other than $IMG_BARMAN_CLOUD (above): there is no registry to pull it from"
  fi
  # the names the plugin's Service annotations give (cnpg.io/pluginServerSecret, cnpg.io/pluginClientSecret)
  tls_secret barman-cloud-server-tls barman-cloud serverAuth barman-cloud
  tls_secret barman-cloud-client-tls barman-cloud-client clientAuth
  kc apply --server-side --force-conflicts -f "$work/plugin.yaml" >/dev/null
  wait_for "the ObjectStore CRD established" 60 \
    kc wait --for condition=established --timeout=2s crd/objectstores.barmancloud.cnpg.io || die "the ObjectStore CRD is not established"
  kc -n "$PLUGIN_NS" rollout status deploy/barman-cloud --timeout=180s >/dev/null \
    || { kc -n "$PLUGIN_NS" logs deploy/barman-cloud --tail=30 >&2 || true; die "the Barman Cloud plugin did not become ready"; }
  # The operator registers a plugin when it reconciles the plugin's Service (internal/controller/plugin_controller.go);
  # a failure there (a bad Secret, an unreachable Service) is an event on that Service.
  wait_for "the CloudNativePG operator registers $PLUGIN_NAME" 90 registered \
    || { kc -n "$PLUGIN_NS" get events --field-selector involvedObject.name=barman-cloud 2>&1 | tail -5 >&2
         die "the CloudNativePG operator did not register the Barman Cloud plugin (events above)"; }
  log "Barman Cloud plugin $BARMAN_CLOUD_PLUGIN_VERSION running ($IMG_BARMAN_CLOUD), registered with the operator"
}

# The operator registers the plugin when it reconciles the plugin's Service, and says so with the event
# PluginRegistered on it (or, when it had it already, "Plugin already registered" in its log).
registered() {
  kc -n "$PLUGIN_NS" get events --field-selector involvedObject.name=barman-cloud,reason=PluginRegistered -o name | grep -q . \
    || kc -n "$PLUGIN_NS" logs deploy/cnpg-controller-manager --since=15m | grep -F "$PLUGIN_NAME" | grep -qF 'already registered'
}

case ${1:-} in
  install) install ;;
  manifest) manifest ;;
  *) echo "usage: $0 install|manifest" >&2; exit 2 ;;
esac
