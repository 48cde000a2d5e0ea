#!/usr/bin/env bash
# Build (once, cached by version) the Kubernetes binaries, CoreDNS, minikube's
# storage provisioner, the Prometheus server and the CloudNativePG operator that
# the local cluster runs.
# Everything lands outside the repository under $CLUSTER_CACHE (default
# /var/cache/billing-cluster); a second run with the same versions does nothing.
#
# Builds run under `nice -n 19` with GOFLAGS=-p=${BUILD_JOBS:-2} so that they do
# not starve other work on a small machine.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster/versions.sh
. "$here/versions.sh"

export CGO_ENABLED=0
export GOFLAGS="-p=${BUILD_JOBS:-2} -buildvcs=false -trimpath"
nice=(nice -n 19)

log() { printf '[build %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

build_k8s() {
  local missing=() c
  for c in "${k8s_cmds[@]}"; do [[ -x $K8S_BIN/$c ]] || missing+=("$c"); done
  if ((${#missing[@]} == 0)); then log "kubernetes $K8S_VERSION: cached in $K8S_BIN"; return; fi
  local v=${K8S_VERSION#v} major minor
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w" pkg key val
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for kv in "gitVersion=$K8S_VERSION" "gitMajor=$major" "gitMinor=$minor" \
              "gitTreeState=clean" "gitCommit=published-module-$K8S_VERSION" "buildDate=$date"; do
      key=${kv%%=*}; val=${kv#*=}
      ld+=" -X $pkg.$key=$val"
    done
  done
  mkdir -p "$K8S_BIN.tmp"
  local pkgs=()
  for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  log "kubernetes $K8S_VERSION: building ${missing[*]} (this is the long part: tens of minutes cold)"
  (cd "$here/k8s" && "${nice[@]}" go build -ldflags "$ld" -o "$K8S_BIN.tmp/" "${pkgs[@]}")
  mkdir -p "$K8S_BIN"
  for c in "${missing[@]}"; do mv "$K8S_BIN.tmp/$c" "$K8S_BIN/$c"; done
  rmdir "$K8S_BIN.tmp"
  "$K8S_BIN/kubectl" version --client >&2
}

build_etcd() {
  if [[ -x $ETCD_BIN/etcd ]]; then log "etcd $ETCD_VERSION: cached in $ETCD_BIN"; return; fi
  local want
  want=$(cd "$here/k8s" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
  [[ $want == "$ETCD_VERSION" ]] || { log "k8s/go.mod has etcd $want but versions.sh says $ETCD_VERSION"; exit 1; }
  log "etcd $ETCD_VERSION: building go.etcd.io/etcd/server/v3 from the wrapper module"
  mkdir -p "$ETCD_BIN"
  (cd "$here/k8s" && "${nice[@]}" go build -ldflags "-s -w" -o "$ETCD_BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$ETCD_BIN/etcd.tmp" "$ETCD_BIN/etcd"
  "$ETCD_BIN/etcd" --version >&2
}

go_install() { # bin-dir name module/pkg@version
  local dir=$1 name=$2 target=$3
  if [[ -x $dir/$name ]]; then log "$name: cached in $dir"; return; fi
  log "$name: go install $target"
  mkdir -p "$dir"
  # `go install pkg@version` builds outside any main module, honouring none of
  # our go.mod: exactly the published module with its own go.sum.
  GOBIN=$dir GOFLAGS="$GOFLAGS" "${nice[@]}" go install -ldflags "-s -w" "$target"
}

# The Barman Cloud plugin of CloudNativePG (cmd/manager: `operator`, the plugin's server the CloudNativePG
# operator calls over mTLS, and `instance`, the sidecar it injects into every PostgreSQL pod of a Cluster that
# archives through it), from its published module as `go install` builds it (no replace directives).
build_barman_cloud() {
  go_install "$BARMAN_CLOUD_BIN" manager "github.com/cloudnative-pg/plugin-barman-cloud/cmd/manager@$BARMAN_CLOUD_PLUGIN_VERSION"
}

# minikube's provisioner from the wrapper module cluster/provisioner (go.mod
# requires k8s.io/minikube at $MINIKUBE_VERSION; `go install ...@version` is
# refused here because the proxy answers 403 to k8s.io/minikube's version list).
build_provisioner() {
  local dir=$PROVISIONER_BIN
  if [[ -x $dir/storage-provisioner ]]; then log "storage-provisioner: cached in $dir"; return; fi
  local want
  want=$(cd "$here/provisioner" && go list -m -f '{{.Version}}' k8s.io/minikube)
  [[ $want == "$MINIKUBE_VERSION" ]] || { log "provisioner/go.mod has minikube $want, versions.sh $MINIKUBE_VERSION"; exit 1; }
  log "storage-provisioner: building k8s.io/minikube/cmd/storage-provisioner $MINIKUBE_VERSION"
  mkdir -p "$dir"
  (cd "$here/provisioner" && "${nice[@]}" go build -ldflags "-s -w" -o "$dir/storage-provisioner.tmp" k8s.io/minikube/cmd/storage-provisioner)
  mv "$dir/storage-provisioner.tmp" "$dir/storage-provisioner"
}

# The Prometheus server (cmd/prometheus) from its published module, with only the
# service discoveries the e2e uses: the build tag remove_all_sd drops every
# plugin of the module's plugins/ package (AWS, Azure, GCE, Consul, ... each
# guarded by `//go:build !remove_all_sd || enable_<name>_sd`) and
# enable_kubernetes_sd brings kubernetes_sd back; file_sd and http_sd are always
# in (plugins/minimum.go). Without the builtinassets tag the web UI is not
# embedded (web/ui/ui.go serves it from a source directory that the binary does
# not have), which the HTTP API the e2e queries does not need. The -X flags fill
# what `prometheus --version` and the prometheus_build_info metric report.
build_prometheus() {
  local dir=$PROMETHEUS_BIN
  if [[ -x $dir/prometheus ]]; then log "prometheus: cached in $dir"; return; fi
  local v=github.com/prometheus/common/version ld
  ld="-s -w -X $v.Version=${PROMETHEUS_VERSION#v} -X $v.Revision=published-module-$PROMETHEUS_MODULE_VERSION"
  ld+=" -X $v.Branch=HEAD -X $v.BuildUser=billing-cluster -X $v.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"
  log "prometheus $PROMETHEUS_VERSION: go install github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" \
    "-tags remove_all_sd,enable_kubernetes_sd"
  mkdir -p "$dir.tmp"
  GOBIN=$dir.tmp GOFLAGS="$GOFLAGS" "${nice[@]}" go install -tags remove_all_sd,enable_kubernetes_sd -ldflags "$ld" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION"
  "$dir.tmp/prometheus" --version >&2
  mkdir -p "$dir"
  mv "$dir.tmp/prometheus" "$dir/prometheus"
  rmdir "$dir.tmp"
}

# The CloudNativePG operator (cmd/manager: the operator, and the instance manager it copies into every
# PostgreSQL pod) from the wrapper module cluster/cnpg, for the same 403 reason as the provisioner. The -X
# flags fill what `manager version` and the operator's log report.
build_cnpg() {
  local dir=$CNPG_BIN
  if [[ -x $dir/manager ]]; then log "cloudnative-pg: cached in $dir"; return; fi
  local want v=github.com/cloudnative-pg/cloudnative-pg/pkg/versions
  want=$(cd "$here/cnpg" && go list -m -f '{{.Version}}' github.com/cloudnative-pg/cloudnative-pg)
  [[ $want == "$CNPG_VERSION" ]] || { log "cnpg/go.mod has cloudnative-pg $want, versions.sh $CNPG_VERSION"; exit 1; }
  log "cloudnative-pg $CNPG_VERSION: building github.com/cloudnative-pg/cloudnative-pg/cmd/manager"
  mkdir -p "$dir"
  (cd "$here/cnpg" && "${nice[@]}" go build \
    -ldflags "-s -w -X $v.buildVersion=${CNPG_VERSION#v} -X $v.buildCommit=published-module-$CNPG_VERSION -X $v.buildDate=$(date -u +%Y-%m-%d)" \
    -o "$dir/manager.tmp" github.com/cloudnative-pg/cloudnative-pg/cmd/manager)
  mv "$dir/manager.tmp" "$dir/manager"
}

# versitygw, an S3-compatible server over a directory (its posix backend), for CloudNativePG's WAL archive and
# base backups in the local cluster: a real S3 API, not a mock. `go install ...@version` builds exactly the
# published module (it has no replace directives); CGO stays off as for everything here (its RDMA/CUDA parts
# need cgo and are left out by their build constraints). The -X flags fill what `versitygw --version` prints.
# Not part of `all`: only the backup scenario needs it.
build_versitygw() {
  local dir=$VERSITYGW_BIN
  if [[ -x $dir/versitygw ]]; then log "versitygw: cached in $dir"; return; fi
  local ld="-s -w -X main.Version=$VERSITYGW_VERSION -X main.Build=published-module-$VERSITYGW_VERSION"
  ld+=" -X main.BuildTime=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  log "versitygw $VERSITYGW_VERSION: go install github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  mkdir -p "$dir.tmp"
  GOBIN=$dir.tmp GOFLAGS="$GOFLAGS" "${nice[@]}" go install -ldflags "$ld" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  "$dir.tmp/versitygw" --version >&2
  mkdir -p "$dir"
  mv "$dir.tmp/versitygw" "$dir/versitygw"
  rmdir "$dir.tmp"
}

what=${1:-all}
case $what in
  k8s) build_k8s ;;
  etcd) build_etcd ;;
  coredns) go_install "$COREDNS_BIN" coredns "github.com/coredns/coredns@$COREDNS_VERSION" ;;
  provisioner) build_provisioner ;;
  prometheus) build_prometheus ;;
  cnpg) build_cnpg ;;
  versitygw) build_versitygw ;;
  barman-cloud) build_barman_cloud ;;
  backup) build_versitygw; build_barman_cloud ;;
  all)
    build_k8s
    build_etcd
    go_install "$COREDNS_BIN" coredns "github.com/coredns/coredns@$COREDNS_VERSION"
    build_provisioner
    build_prometheus
    build_cnpg
    ;;
  *) echo "usage: $0 [all|k8s|etcd|coredns|provisioner|prometheus|cnpg|versitygw|barman-cloud|backup]" >&2; exit 2 ;;
esac
