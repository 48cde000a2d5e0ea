#!/usr/bin/env bash
# Bring up a real single-node Kubernetes on this machine without Docker:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd,
# kubelet and kube-proxy as plain processes (PIDs in /run/billing-cluster/pids),
# CoreDNS and minikube's storage provisioner as in-cluster workloads.
#
#   sudo cluster/up.sh            # installs Debian packages, builds (cached), starts
#   export KUBECONFIG=/var/lib/billing-cluster/kubeconfig
#   cluster/down.sh               # stops everything and undoes every host change
#
# Environment: BILLING_BINARY (default target/release/billing) for the billing
# images; CLUSTER_CACHE (default /var/cache/billing-cluster); BUILD_JOBS (2).
# See cluster/README.md for what this changes on the host.
#
# The work is done in named phases (CLUSTER_PHASES in common.sh, which also holds the contract of every state
# file up.sh writes for down.sh): up_<phase> below, run in that order by main at the bottom; down.sh's
# down_<phase> undo them in the reverse order.
set -euo pipefail
# shellcheck source=cluster/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

[[ $(id -u) == 0 ]] || die "run as root"

# ---------------------------------------------------------------- helpers
cert() { # name CN O sans eku
  local name=$1 cn=$2 o=$3 sans=$4 eku=$5 subj
  subj="/CN=$cn${o:+/O=$o}"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z $sans ]] || echo "subjectAltName=$sans"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
kubeconfig() { # file cert-name
  local f=$1 c=$2 k=("$K8S_BIN/kubectl" --kubeconfig "$1")
  "${k[@]}" config set-cluster local --server "https://$NODE_IP:6443" \
    --certificate-authority "$PKI/ca.crt" --embed-certs >/dev/null
  "${k[@]}" config set-credentials "$c" --client-certificate "$PKI/$c.crt" \
    --client-key "$PKI/$c.key" --embed-certs >/dev/null
  "${k[@]}" config set-context local --cluster local --user "$c" >/dev/null
  "${k[@]}" config use-context local >/dev/null
  chmod 600 "$f"
}
# start NAME COMMAND...: a background process in its own session, output to $LOGS/NAME.log, PID in $PIDS/NAME.pid
start() {
  local name=$1; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  log "started $name (pid $!, log $LOGS/$name.log)"
}
alive_or_die() { pid_alive "$1" || { tail -n 30 "$LOGS/$1.log" >&2; die "$1 exited"; }; }
# record KIND VALUE...: a host change down.sh must undo (the contract in common.sh)
record() { echo "$*" >>"$STATE/host-changes"; }
has_dns_rule() { iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q -- "-d $DNS_IP/32"; }

# ---------------------------------------------------------------- before the phases (nothing to undo)
# preflight: exits 0 when the cluster already runs; tears an earlier run's leftovers down; refuses to start
# beside another Kubernetes.
preflight() {
  if pid_alive kube-apiserver; then
    log "already running; KUBECONFIG=$KUBECONFIG_ADMIN"
    exit 0
  fi
  if [[ -d $STATE || -d $RUN ]]; then
    log "leftovers of an earlier run found: tearing them down first"
    bash "$here/down.sh"
  fi
  # Another Kubernetes on this machine (k3s, kubeadm, kind's host side does not count) shares the names of
  # iptables chains, cgroups and ports with ours: starting beside it would break it, and down.sh could not tell
  # its pieces from ours. Refuse, saying what was found.
  local found
  mapfile -t found < <(foreign_cluster_findings)
  if ((${#found[@]})); then
    log "ERROR: this machine already runs (or has the leftovers of) another Kubernetes or network using our ranges:"
    printf '  - %s\n' "${found[@]}" >&2
    die "refusing to start beside it (stop it, or use its kube context: E2E_ALLOW_CONTEXT=1 e2e/run.sh)"
  fi
}

# build: packages, binaries and images, all cached (kept by down.sh)
build() {
  [[ ${SKIP_DEPS:-} == 1 ]] || bash "$here/install-deps.sh"
  bash "$here/build.sh" all
  bash "$here/images.sh" base
  bash "$here/images.sh" billing || log "WARNING: no billing image (build target/release/billing first)"
}

# ---------------------------------------------------------------- phases (undone by down.sh's down_<phase>)
up_state() {
  mkdir -p "$STATE" "$RUN" "$PIDS" "$LOGS" "$PKI"
  chmod 700 "$STATE"
  : >"$STATE/host-changes"   # what down.sh must undo, one line each
}

up_sysctls() {
  local s v
  for s in "${WATCHED_SYSCTLS[@]}"; do
    v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$v"
  done >"$STATE/sysctl.orig"
  sysctl -q -w net.ipv4.ip_forward=1
  sysctl -q -w net.bridge.bridge-nf-call-iptables=1 2>/dev/null \
    || die "net.bridge.bridge-nf-call-iptables missing (modprobe br_netfilter)"
}

# cgroups the kubelet (cgroupfs driver) will create: none existed (preflight), so each is ours.
up_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -d $h && ! -L ${h%/} ]] && record cgroup "${h}kubepods"
  done
  [[ -f /sys/fs/cgroup/cgroup.controllers ]] && record cgroup /sys/fs/cgroup/kubepods
  return 0
}

up_network() {
  # the CNI bridge (absent, checked by preflight) and the conntrack entries of our pods' addresses
  record link "$BRIDGE"
  record conntrack "$POD_CIDR"
  if ! ip -4 addr show dev lo | grep -q " $NODE_IP/32"; then
    ip addr add "$NODE_IP/32" dev lo
    record lo-addr "$NODE_IP/32"
  fi
  # Service IPs without a kube-proxy rule must never be routed off this machine:
  # route the range to lo (such packets die there; pods' are also dropped by the
  # chain of up_firewall). Not a blackhole route: with one, connect() from the host and
  # hostNetwork pods fails before kube-proxy's OUTPUT DNAT is reached. src makes
  # host connections to Service IPs leave from the node address.
  if ! ip route show "$SERVICE_CIDR" | grep -q .; then
    ip route add "$SERVICE_CIDR" dev lo src "$NODE_IP"
    record route "$SERVICE_CIDR" dev lo
  fi
}

up_firewall() {
  # netfilter tables present before start (iptables-nft creates ip/ip6 filter, nat,
  # mangle on first use; kube-proxy may add its own); down.sh deletes the new ones.
  nft list tables >"$STATE/nft-tables.orig" 2>/dev/null || true
  # iptables as they were: down.sh removes only the KUBE-*/CNI-*/BILLING-CLUSTER chains absent from this
  # snapshot and the rules that jump to them, never a chain or rule that was already there.
  iptables_snapshot >"$STATE/iptables.orig"
  record iptables-snapshot "$STATE/iptables.orig"
  # Pod traffic stays on the bridge: nothing from or to pods is forwarded through
  # another interface (no masquerading, no way out).
  iptables -N "$FW_CHAIN" 2>/dev/null || iptables -F "$FW_CHAIN"
  iptables -A "$FW_CHAIN" -s "$CLUSTER_CIDR" -o "$BRIDGE" -j RETURN
  iptables -A "$FW_CHAIN" -s "$CLUSTER_CIDR" -j DROP
  iptables -A "$FW_CHAIN" -d "$CLUSTER_CIDR" ! -i "$BRIDGE" -j DROP
  iptables -C FORWARD -j "$FW_CHAIN" 2>/dev/null || iptables -I FORWARD 1 -j "$FW_CHAIN"
}

up_paths() {
  local p
  for p in "${HARDCODED_PATHS[@]}"; do
    [[ -e $p ]] || record created-path "$p"
  done
  if [[ ! -d $HOSTPATH_DIR ]]; then
    mkdir -p "$HOSTPATH_DIR"
    record dir "$HOSTPATH_DIR"
  fi
}

# PKI (openssl) and the components' kubeconfigs, all under $STATE
up_pki() {
  local c
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=billing-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  cert apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:$API_SERVICE_IP,IP:$NODE_IP,IP:127.0.0.1" serverAuth
  cert apiserver-kubelet-client kube-apiserver-kubelet-client "kubeadm:cluster-admins" "" clientAuth
  cert admin kubernetes-admin "system:masters" "" clientAuth
  cert controller-manager system:kube-controller-manager "" "" clientAuth
  cert scheduler system:kube-scheduler "" "" clientAuth
  cert kube-proxy system:kube-proxy "" "" clientAuth
  cert kubelet-client "system:node:$NODE_NAME" "system:nodes" "" clientAuth
  cert kubelet-serving "$NODE_NAME" "" "DNS:$NODE_NAME,IP:$NODE_IP" serverAuth
  chmod 600 "$PKI"/*.key
  kubeconfig "$KUBECONFIG_ADMIN" admin
  for c in controller-manager scheduler kube-proxy kubelet-client; do kubeconfig "$STATE/$c.kubeconfig" "$c"; done
}

up_etcd() {
  start etcd "$ETCD_BIN/etcd" --name billing-local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "billing-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --quota-backend-bytes=1073741824 --log-level=warn
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health" || die "etcd did not start"
}

up_control_plane() {
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
    --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false --event-ttl 1h --v=1
  wait_for kube-apiserver 120 kc get --raw /readyz || die "kube-apiserver not ready"
  alive_or_die kube-apiserver

  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true \
    --allocate-node-cidrs=true --cluster-cidr "$CLUSTER_CIDR" --node-cidr-mask-size 24 \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false --v=1
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
}

up_containerd() {
  local img
  mkdir -p "$STATE/containerd" "$RUN/containerd" "$STATE/cni/net.d" "$STATE/cni/ipam" "$STATE/containerd-opt"
  cat >"$STATE/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$IMG_PAUSE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  cat >"$STATE/cni/net.d/10-billing-local.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "billing-local",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni/ipam"
      }
    }
  ]
}
EOF
  start containerd containerd --config "$STATE/containerd.toml"
  wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version || die "containerd did not start"
  for img in "$IMAGES_DIR"/*.tar; do
    [[ $(basename "$img") == billing.tar ]] && continue   # symlink to billing-<first tag>.tar
    ctr_ images import "$img" >/dev/null
  done
  log "images: $(ctr_ images ls -q | grep -v '^sha256:' | tr '\n' ' ')"
}

up_kubelet() {
  mkdir -p "$STATE/kubelet"
  cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_IP]
resolvConf: ""
maxPods: 60
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
rotateCertificates: false
serverTLSBootstrap: false
protectKernelDefaults: false
podLogsDir: $STATE/pod-logs
EOF
  start kubelet "$K8S_BIN/kubelet" --config "$STATE/kubelet.yaml" \
    --kubeconfig "$STATE/kubelet-client.kubeconfig" --root-dir "$STATE/kubelet" \
    --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v=1
  wait_for "node registered" 90 kc get node "$NODE_NAME" || die "kubelet did not register the node"
  alive_or_die kubelet
}

up_kube_proxy() {
  cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $CLUSTER_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
nodePortAddresses: ["$NODE_IP/32"]
EOF
  start kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE/kube-proxy.yaml" --v=1
  wait_for "node Ready" 120 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s || die "node not Ready"
}

up_addons() {
  sed -e "s#@IMG_COREDNS@#$IMG_COREDNS#; s#@IMG_PROVISIONER@#$IMG_PROVISIONER#; s#@DNS_IP@#$DNS_IP#" \
      -e "s#@CLUSTER_DOMAIN@#$CLUSTER_DOMAIN#; s#@HOSTPATH_DIR@#$HOSTPATH_DIR#g" "$here/addons.yaml.tmpl" >"$STATE/addons.yaml"
  wait_for "default service account" 60 kc -n kube-system get serviceaccount default || die "no service accounts"
  kc apply -f "$STATE/addons.yaml" >/dev/null
  kc -n kube-system rollout status deployment/coredns --timeout=120s >&2 || die "CoreDNS not ready"
  kc -n kube-system wait --for=condition=Ready pod/storage-provisioner --timeout=120s >&2 || die "storage provisioner not ready"
  wait_for "kube-proxy rules for kube-dns" 60 has_dns_rule || log "WARNING: no kube-dns rule seen (continuing)"
}

# ---------------------------------------------------------------- main
main() {
  local t_start t_built t_end phase
  t_start=$(date +%s)
  preflight
  build
  t_built=$(date +%s)
  for phase in "${CLUSTER_PHASES[@]}"; do
    log "up: phase $phase"
    "up_$phase"
  done
  t_end=$(date +%s)
  echo "up: $((t_end - t_start))s total ($((t_built - t_start))s build/cache check, $((t_end - t_built))s start)" \
    | tee -a "$LOGS/timings" >&2
  kc get nodes -o wide >&2
  echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
}
main "$@"
