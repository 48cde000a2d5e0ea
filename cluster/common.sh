# shellcheck shell=bash disable=SC2034 # sourced: the variables are used by up.sh and down.sh
# Shared settings of cluster/up.sh and cluster/down.sh.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster/versions.sh
. "$here/versions.sh"

STATE=${CLUSTER_STATE:-/var/lib/billing-cluster}   # etcd, containerd root, kubelet root, PKI, configs, logs
RUN=/run/billing-cluster                            # sockets, containerd state, pid files
PIDS=$RUN/pids
LOGS=$STATE/logs
PKI=$STATE/pki
KUBECONFIG_ADMIN=$STATE/kubeconfig
NODE_NAME=billing-local
NODE_IP=10.250.0.1          # added as a /32 on lo (no dummy interface on every kernel)
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
BRIDGE=bcni0                # made by the CNI bridge plugin
ETCD_PORT=2479              # loopback only; not etcd's default port, to stay out of the way of another etcd
ETCD_PEER_PORT=2480
HOSTPATH_DIR=/tmp/hostpath-provisioner   # minikube's provisioner path; same path inside and outside
CONTAINERD_SOCK=$RUN/containerd/containerd.sock
FW_CHAIN=BILLING-CLUSTER    # our own filter chain (keeps pod traffic on this machine)

# Fixed paths that kubelet, containerd's shims and libcni use whatever their
# configuration says (device plugins, shim sockets, CNI result cache, legacy
# log symlinks). up.sh records which of them did not exist; down.sh removes those.
HARDCODED_PATHS=(/var/lib/kubelet /run/containerd /var/lib/cni /var/log/containers /var/log/pods /run/netns /etc/kubernetes)

# sysctls that up.sh sets or that kubelet / kube-proxy write; their values before
# start are saved in $STATE/sysctl.orig and put back by down.sh.
WATCHED_SYSCTLS=(
  net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables
  vm.overcommit_memory
  vm.panic_on_oom
  kernel.panic
  kernel.panic_on_oops
  kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes
  net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait
  net.ipv4.conf.all.route_localnet
  net.ipv4.conf.bcni0.route_localnet
  net.ipv6.conf.all.forwarding
)

log() { printf '[cluster %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
# wait_for WHAT SECONDS COMMAND...: bounded wait until COMMAND succeeds
wait_for() {
  local what=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs; i++)); do
    if "$@" >/dev/null 2>&1; then log "$what: ok after ${i}s"; return 0; fi
    sleep 1
  done
  log "$what: not ready after ${secs}s; last lines of the logs:"
  tail -n 15 "$LOGS"/*.log >&2 || true
  return 1
}
ctr_() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

pid_alive() { # name
  local f=$PIDS/$1.pid
  [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

# stop_pid NAME [timeout-seconds]: SIGTERM the process recorded in $PIDS/NAME.pid, SIGKILL after the timeout
stop_pid() {
  local name=$1 t=${2:-20} f=$PIDS/$1.pid pid i
  [[ -s $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < t * 5; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) did not stop in ${t}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$f"
}

# ---------------------------------------------------------------- host safety
# Prefixes of the iptables chains this cluster's kube-proxy, kubelet and CNI
# plugins create, and our own chain. down.sh removes only chains with these
# names that did NOT exist before up.sh (its snapshot), and only the rules that
# jump to them: a chain of the same family that was there before is someone
# else's and stays.
OUR_CHAIN_RE="^(KUBE-|CNI-|$FW_CHAIN\$)"
IPT_TABLES=(filter nat mangle raw)

# iptables_snapshot: every rule and chain of every table (IPv4 and IPv6), without counters, one
# "<family> <table> <rule>" line each, on standard output. (It once took a file name and was given
# /dev/stdout inside a redirected block: reopening that truncated the block's file and wrote from its start,
# so host-safety.sh's snapshots kept 12 bytes of the iptables section and never compared it.)
iptables_snapshot() {
  local ipt t
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in "${IPT_TABLES[@]}"; do
      "$ipt" -t "$t" -S 2>/dev/null | sed "s/^/$ipt $t /"
    done
  done
}

# our_shims: the PIDs of containerd shims started by our containerd, found by the socket address every one of
# them is started with (only ours carry $CONTAINERD_SOCK). Their bundles' shim.pid files miss some of them when
# the cluster was killed rather than stopped: a task still starting has no file yet, and such a shim outlives
# containerd (host-safety.sh killed-run left two per run before down.sh looked for them this way).
our_shims() {
  local p cmd
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
    [[ $cmd == *containerd-shim*" -address $CONTAINERD_SOCK"* ]] && echo "${p#/proc/}"
  done
  return 0
}

# foreign_cluster_findings: one line per sign of another Kubernetes (or of
# anything using our addresses) on this machine; nothing when it is clear.
# Run while our cluster is NOT running: our own processes and chains would
# count otherwise.
foreign_cluster_findings() {
  local p comm ours=" " f ipt t chain port
  for f in "$PIDS"/*.pid; do [[ -s $f ]] && ours+="$(cat "$f") "; done
  for p in /proc/[0-9]*; do
    comm=$(cat "$p/comm" 2>/dev/null) || continue
    case $comm in
      kubelet | kube-apiserver | kube-proxy | kube-controller | kube-scheduler | k3s | k3s-server | k3s-agent | k0s | kubelite)
        [[ $ours == *" ${p#/proc/} "* ]] || echo "process $comm (pid ${p#/proc/}) is running" ;;
    esac
  done
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat; do
      for chain in $("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E '^KUBE-' | head -5); do
        echo "$ipt chain $chain in table $t (kube-proxy's or kubelet's)"
      done
    done
  done
  for f in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods.slice /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d $f ]] && echo "cgroup $f exists (a kubelet's pods)"
  done
  for f in /etc/kubernetes/manifests /etc/kubernetes/kubelet.conf /var/lib/kubelet/config.yaml /etc/rancher/k3s /var/lib/rancher/k3s /var/lib/k0s; do
    [[ -e $f ]] && echo "path $f exists (kubeadm, k3s or k0s)"
  done
  for f in "$BRIDGE" cni0 flannel.1 cilium_host kube-ipvs0 vxlan.calico weave kube-bridge; do
    ip link show "$f" >/dev/null 2>&1 && echo "network interface $f exists"
  done
  ip -o link show 2>/dev/null | awk -F': ' '$2 ~ /^cali/ {print "network interface " $2 " exists (Calico)"}' | head -3
  ip -4 -o addr show 2>/dev/null | awk -v a="$NODE_IP/" 'index($4, a) == 1 {print "address " $4 " is already on " $2}'
  ip -4 route show 2>/dev/null | awk '$1 ~ /^10\.(244|96)\./ {print "route " $0 " overlaps the pod or Service range (10.244.0.0/16, 10.96.0.0/16)"}'
  for port in 6443 10250 10256 10257 10259 "$ETCD_PORT" "$ETCD_PEER_PORT"; do
    ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && echo "TCP port $port is already listened on"
  done
  return 0
}
