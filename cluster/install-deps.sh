#!/usr/bin/env bash
# Debian packages the local cluster needs (run as root, Debian 12).
# Nothing here starts a service: containerd is started by cluster/up.sh with its
# own config and state directories, never through systemd.
set -euo pipefail
pkgs=(
  containerd runc containernetworking-plugins   # CRI runtime, OCI runtime, CNI bridge/host-local/loopback/portmap
  umoci debootstrap                             # image building without a Docker engine
  conntrack iptables iproute2 ethtool socat     # what kubelet/kube-proxy shell out to
  nftables                                      # nft: down.sh removes the netfilter tables the run created
  openssl curl ca-certificates jq util-linux procps kmod
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps the Debian packages from pulling in docker-ish extras
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The packages ship systemd units; on a machine running systemd they may start
# their own containerd/etcd. The local cluster runs private instances on other
# paths and ports, so whatever the packages started is left alone.
echo "install-deps: ok (${#missing[@]} installed)"
