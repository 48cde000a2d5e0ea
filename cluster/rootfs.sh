#!/usr/bin/env bash
# Root filesystems for the local images, made with debootstrap from Debian's
# package archive (the mirror the host's apt uses) and cached as tarballs:
#   base.tar      debootstrap --variant=minbase bookworm
#   postgres.tar  base + postgresql-15 (no cluster created; see image entrypoint)
#   tools.tar     base + curl and iproute2 (the temporary client pod)
#   barman-cloud-<version>.tar   base + python3 and a virtualenv /venv holding barman's barman-cloud-* tools
#                 (images/barman-cloud-requirements.txt, wheels fetched from PyPI by the host's pip), for the
#                 Barman Cloud plugin's sidecar; only on request: rootfs.sh barman-cloud
# All mounts made while building live in a private mount namespace (unshare -m)
# and vanish with it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster/versions.sh
. "$here/versions.sh"
R=$IMAGES_DIR/rootfs-$DEBIAN_SUITE
mkdir -p "$R"
log() { printf '[rootfs %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

mirror() {
  local m
  m=$(grep -h -m1 -E '^URIs: .*/debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}') || true
  if [[ -z $m ]]; then m=$(awk '$1=="deb" && $3=="'"$DEBIAN_SUITE"'" {print $2; exit}' /etc/apt/sources.list 2>/dev/null); fi
  echo "${m:-http://deb.debian.org/debian}"
}

in_chroot() { # dir command...
  local dir=$1; shift
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare --mount --propagation private -- bash -euc '
    d=$1; shift
    mount -t proc proc "$d/proc"
    mount --bind /dev "$d/dev"
    cp /etc/resolv.conf "$d/etc/resolv.conf" 2>/dev/null || true
    chroot "$d" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
  ' _ "$dir" "$@"
}

slim() { # drop what no container needs: package lists, docs, man pages, the build's resolv.conf
  rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/usr/share/doc/* "$1"/usr/share/man/* \
    "$1"/usr/share/info/* "$1/etc/resolv.conf"
}

base() {
  [[ -s $R/base.tar ]] && { log "base: cached"; return; }
  local d=$R/base.d
  rm -rf "$d"; mkdir -p "$d"
  log "base: debootstrap --variant=minbase $DEBIAN_SUITE from $(mirror)"
  nice -n 10 debootstrap --variant=minbase "$DEBIAN_SUITE" "$d" "$(mirror)" >"$R/debootstrap.log" 2>&1 \
    || { tail -20 "$R/debootstrap.log" >&2; exit 1; }
  # same archive set as the host (updates + security), so library versions match
  if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    rm -f "$d/etc/apt/sources.list"
    cp /etc/apt/sources.list.d/debian.sources "$d/etc/apt/sources.list.d/" 2>/dev/null || true
  fi
  printf '#!/bin/sh\nexit 101\n' >"$d/usr/sbin/policy-rc.d"; chmod +x "$d/usr/sbin/policy-rc.d"
  in_chroot "$d" apt-get update -qq
  in_chroot "$d" apt-get -y -qq upgrade
  in_chroot "$d" apt-get clean
  slim "$d"
  tar -C "$d" --numeric-owner -cf "$R/base.tar.tmp" . && mv "$R/base.tar.tmp" "$R/base.tar"
  rm -rf "$d"
}

derived() { # name packages...: base + the packages; DERIVED_HOOK, when set, is then called with the root directory
  local name=$1; shift
  [[ -s $R/$name.tar ]] && { log "$name: cached"; return; }
  local d=$R/$name.d
  rm -rf "$d"; mkdir -p "$d"
  tar -C "$d" -xf "$R/base.tar"
  if [[ $name == postgres ]]; then
    mkdir -p "$d/etc/postgresql-common/createcluster.d"
    echo 'create_main_cluster = false' >"$d/etc/postgresql-common/createcluster.d/no-main.conf"
    # uid/gid 999 as in the official postgres image, so charts that set runAsUser/fsGroup 999 work
    in_chroot "$d" groupadd -r -g 999 postgres
    in_chroot "$d" useradd -r -g postgres -u 999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres
  fi
  log "$name: apt-get install $*"
  in_chroot "$d" apt-get update -qq
  in_chroot "$d" apt-get install -y -qq --no-install-recommends "$@" >"$R/$name-apt.log" 2>&1 \
    || { tail -20 "$R/$name-apt.log" >&2; exit 1; }
  in_chroot "$d" apt-get clean
  if [[ -n ${DERIVED_HOOK:-} ]]; then "$DERIVED_HOOK" "$d"; fi
  if [[ $name == postgres ]]; then
    mkdir -p "$d/var/run/postgresql" "$d/var/lib/postgresql/data"
    chown -R 999:999 "$d/var/run/postgresql" "$d/var/lib/postgresql"
    chmod 3777 "$d/var/run/postgresql"
    chmod 1777 "$d/var/lib/postgresql/data"
  fi
  slim "$d"
  tar -C "$d" --numeric-owner -cf "$R/$name.tar.tmp" . && mv "$R/$name.tar.tmp" "$R/$name.tar"
  rm -rf "$d"
}

# base + python3 + /venv with the barman-cloud-* tools. The wheels are fetched on the host (its pip has PyPI),
# for CPython 3.11 on manylinux (bookworm's python3), and installed in the chroot from that directory alone,
# without their dependencies: the requirements file lists every one.
barman_cloud() {
  local req=$here/images/barman-cloud-requirements.txt
  grep -qx "barman==$BARMAN_VERSION" "$req" || { log "$req does not pin barman==$BARMAN_VERSION (versions.sh)"; exit 1; }
  DERIVED_HOOK=install_barman_cloud derived "barman-cloud-$BARMAN_VERSION" python3 python3-venv
}

# install_barman_cloud DIR: the venv, in the chroot DIR that has python3 (derived's hook, before it slims DIR)
install_barman_cloud() {
  local d=$1 req=$here/images/barman-cloud-requirements.txt
  log "barman-cloud: pip download -r $req (CPython 3.11, manylinux x86_64)"
  mkdir -p "$d/tmp/wheels"
  pip download -q --only-binary=:all: --no-deps --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -r "$req" -d "$d/tmp/wheels" >&2
  in_chroot "$d" python3 -m venv /venv
  in_chroot "$d" sh -c '/venv/bin/pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check /tmp/wheels/*.whl'
  rm -rf "$d/tmp/wheels"
  in_chroot "$d" /venv/bin/python3 -c 'import barman.clients.cloud_walarchive, boto3, psycopg2'
  in_chroot "$d" /venv/bin/barman-cloud-wal-archive --version >&2
  # byte code compiled now, as root: the sidecar runs as UID 26 and cannot write it at run time
  in_chroot "$d" /venv/bin/python3 -m compileall -q /venv /usr/lib/python3.11 >/dev/null || true
}

case ${1:-all} in
  all)
    base
    derived postgres "postgresql-$PG_MAJOR"
    derived tools curl ca-certificates iproute2
    ;;
  barman-cloud) base; barman_cloud ;;
  *) echo "usage: $0 [all|barman-cloud]" >&2; exit 2 ;;
esac
log "done: $(printf '%s ' "$R"/*.tar)"
