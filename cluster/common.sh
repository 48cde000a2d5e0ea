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
