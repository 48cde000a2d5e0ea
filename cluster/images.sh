#!/usr/bin/env bash
# Build the local cluster's container images without a Docker engine or a
# registry: root filesystems from cluster/rootfs.sh (debootstrap) or from Go
# binaries, assembled into OCI image archives with umoci, written to
# $IMAGES_DIR/<name>.tar. cluster/up.sh imports them with
# `ctr -n k8s.io images import` under the explicit localhost/... names below.
#
#   localhost/pause:3.10-local               static pause (images/pause.c)
#   localhost/postgres:15-debian12           Debian postgresql-15 + images/postgres-entrypoint.sh
#   localhost/curl:debian12                  Debian + curl, for temporary client pods
#   localhost/coredns:<version>              go install github.com/coredns/coredns
#   localhost/storage-provisioner:<version>  go install k8s.io/minikube/cmd/storage-provisioner
#   localhost/prometheus:<version>           cmd/prometheus of github.com/prometheus/prometheus (build.sh),
#                                            for the e2e's scrape of the billing pods
#   localhost/cloudnative-pg:<version>      cmd/manager of github.com/cloudnative-pg/cloudnative-pg (build.sh cnpg),
#                                            at /manager as in the operator's own image (it copies itself from
#                                            there into every PostgreSQL pod); for the HA scenario only
#   localhost/cnpg-postgresql:15-debian12    the postgres root filesystem with the postgres user as UID/GID 26
#                                            and the binaries on PATH, as CloudNativePG's instance pods expect
#   localhost/billing:v1.1, :v2.0            target/release/billing on Debian 12, user 65532:65532,
#                                            ENTRYPOINT /usr/local/bin/billing, port 8080 (as the Dockerfile)
#   localhost/versitygw:<version>            cmd/versitygw of github.com/versity/versitygw (build.sh versitygw):
#                                            an S3 server, `versitygw posix <dir>` on port 7070, for CloudNativePG's
#                                            backups; only on request (images.sh versitygw), not in `all`
#   localhost/plugin-barman-cloud:<version>-barman-<version>
#                                            CloudNativePG's Barman Cloud plugin (build.sh barman-cloud) at /manager
#                                            and barman's barman-cloud-* tools in /venv (rootfs.sh barman-cloud):
#                                            both the plugin's operator (`/manager operator`) and the sidecar it
#                                            injects into PostgreSQL pods (`/manager instance`), as its
#                                            Dockerfile.plugin and Dockerfile.sidecar make them; only on request
#                                            (images.sh barman-cloud)
#
# Usage: images.sh [all|base|billing|cnpg|pause|postgres|curl|prometheus|versitygw|barman-cloud|backup]   (billing images are rebuilt whenever the binary changes)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=cluster/versions.sh
. "$here/versions.sh"
R=$IMAGES_DIR/rootfs-$DEBIAN_SUITE
mkdir -p "$IMAGES_DIR"
log() { printf '[images %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# oci_build NAME FULLREF [umoci config args...]; layers come from $LAYERS (tar files)
oci_build() {
  local name=$1 ref=$2; shift 2
  local work; work=$(mktemp -d "$IMAGES_DIR/.build-$name.XXXX")
  local lay=$work/oci tag=img
  umoci init --layout "$lay"
  umoci new --image "$lay:$tag"
  local l
  for l in "${LAYERS[@]}"; do
    nice -n 10 umoci raw add-layer --image "$lay:$tag" "$l"
  done
  umoci config --image "$lay:$tag" --config.workingdir / \
    --author "billing local cluster (cluster/images.sh)" --created "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$@"
  umoci gc --layout "$lay"
  jq --arg ref "$ref" '.manifests |= map(select(.annotations["org.opencontainers.image.ref.name"] == "img")
        | .annotations["io.containerd.image.name"] = $ref
        | .annotations["org.opencontainers.image.ref.name"] = $ref)' "$lay/index.json" >"$work/index.json"
  mv "$work/index.json" "$lay/index.json"
  tar -C "$lay" -cf "$IMAGES_DIR/$name.tar.tmp" .
  mv "$IMAGES_DIR/$name.tar.tmp" "$IMAGES_DIR/$name.tar"
  echo "$ref" >"$IMAGES_DIR/$name.ref"
  rm -rf "$work"
  log "$name: $ref -> $IMAGES_DIR/$name.tar"
}

# a layer tar holding the given files: single_layer OUT (dest=src)...
mk_layer() {
  local out=$1; shift
  local d; d=$(mktemp -d)
  local pair dest src
  for pair in "$@"; do
    dest=${pair%%=*}; src=${pair#*=}
    mkdir -p "$d/$(dirname "$dest")"
    cp -a "$src" "$d/$dest"
  done
  tar -C "$d" --numeric-owner --owner=0 --group=0 -cf "$out" .
  rm -rf "$d"
}

img_pause() {
  [[ -s $IMAGES_DIR/pause.tar ]] && return
  local w; w=$(mktemp -d)
  gcc -Os -static -o "$w/pause" "$here/images/pause.c"
  strip "$w/pause"
  mk_layer "$w/layer.tar" "pause=$w/pause"
  LAYERS=("$w/layer.tar")
  oci_build pause "$IMG_PAUSE" --config.entrypoint /pause --config.user 65535:65535
  rm -rf "$w"
}

img_from_go() { # name ref bin
  local name=$1 ref=$2 bin=$3
  [[ -s $IMAGES_DIR/$name.tar ]] && return
  [[ -x $bin ]] || { log "$name: $bin missing (run cluster/build.sh first)"; return 1; }
  local w; w=$(mktemp -d)
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$w/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$w/group"
  mkdir -p "$w/tmpdir" && chmod 1777 "$w/tmpdir"
  mk_layer "$w/layer.tar" "$(basename "$bin")=$bin" "etc/passwd=$w/passwd" "etc/group=$w/group" \
    "etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt" "tmp=$w/tmpdir"
  LAYERS=("$w/layer.tar")
  oci_build "$name" "$ref" --config.entrypoint "/$(basename "$bin")"
  rm -rf "$w"
}

img_postgres() {
  [[ -s $IMAGES_DIR/postgres.tar ]] && return
  local w; w=$(mktemp -d)
  sed "s/@PG_MAJOR@/$PG_MAJOR/g" "$here/images/postgres-entrypoint.sh" >"$w/entry"
  chmod 755 "$w/entry"
  mkdir -p "$w/initdb.d" "$w/data"
  mk_layer "$w/layer.tar" "usr/local/bin/docker-entrypoint.sh=$w/entry" \
    "docker-entrypoint-initdb.d=$w/initdb.d"
  LAYERS=("$R/postgres.tar" "$w/layer.tar")
  oci_build postgres "$IMG_POSTGRES" \
    --config.entrypoint /usr/local/bin/docker-entrypoint.sh --config.cmd postgres \
    --config.env "PATH=/usr/lib/postgresql/$PG_MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.env PGDATA=/var/lib/postgresql/data --config.env LANG=C.UTF-8 \
    --config.exposedports 5432/tcp --config.stopsignal SIGINT --config.volume /var/lib/postgresql/data
  rm -rf "$w"
}

# The operator's image as its Dockerfile lays it out: the binary at /operator/manager_<arch>, /manager a link to it.
# The operator lists /operator/manager_* to learn which architectures it can serve instance pods on (without it:
# "invalid architecture: amd64" on every Cluster), and copies /manager into each of them.
img_cnpg_operator() {
  [[ -s $IMAGES_DIR/cnpg-operator.tar ]] && return
  [[ -x $CNPG_BIN/manager ]] || { log "cnpg-operator: $CNPG_BIN/manager missing (run cluster/build.sh cnpg first)"; return 1; }
  local w arch; w=$(mktemp -d); arch=$(go env GOARCH)
  mkdir -p "$w/root/operator" "$w/root/etc/ssl/certs"
  install -m 755 "$CNPG_BIN/manager" "$w/root/operator/manager_$arch"
  ln -s "operator/manager_$arch" "$w/root/manager"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$w/root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$w/root/etc/group"
  cp /etc/ssl/certs/ca-certificates.crt "$w/root/etc/ssl/certs/"
  tar -C "$w/root" --numeric-owner --owner=0 --group=0 -cf "$w/layer.tar" .
  LAYERS=("$w/layer.tar")
  oci_build cnpg-operator "$IMG_CNPG" --config.entrypoint /manager --config.user 65532:65532
  rm -rf "$w"
}

# CloudNativePG's instance manager runs initdb/postgres/pg_basebackup/pg_rewind/pg_dump from PATH as UID 26 (its
# own images' postgres user): the same Debian PostgreSQL as localhost/postgres, with that user renumbered.
img_cnpg_postgres() {
  [[ -s $IMAGES_DIR/cnpg-postgresql.tar ]] && return
  local w; w=$(mktemp -d)
  tar -C "$w" -xf "$R/postgres.tar" ./etc/passwd ./etc/group
  sed -i 's/^postgres:x:999:999:/postgres:x:26:26:/' "$w/etc/passwd"
  sed -i 's/^postgres:x:999:/postgres:x:26:/' "$w/etc/group"
  if ! grep -q '^postgres:x:26:26:' "$w/etc/passwd" || ! grep -q '^postgres:x:26:' "$w/etc/group"; then
    log "cnpg-postgresql: no postgres user 999 to renumber in $R/postgres.tar"; return 1
  fi
  # /var/run is a symlink to /run in Debian: the socket directory is put at /run/postgresql, never over the link.
  mkdir -p "$w/var/lib/postgresql" "$w/run/postgresql"
  chown 26:26 "$w/var/lib/postgresql" "$w/run/postgresql"
  chmod 2775 "$w/run/postgresql"
  (cd "$w" && tar --numeric-owner -cf layer.tar ./etc/passwd ./etc/group ./var/lib/postgresql ./run/postgresql)
  LAYERS=("$R/postgres.tar" "$w/layer.tar")
  oci_build cnpg-postgresql "$IMG_CNPG_POSTGRES" --config.user 26:26 \
    --config.env "PATH=/usr/lib/postgresql/$PG_MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.env LANG=C.UTF-8 --config.exposedports 5432/tcp
  rm -rf "$w"
}

# One image for the plugin's two containers: Dockerfile.sidecar's layout (/venv on PATH, /manager the entry
# point, UID 26 as CloudNativePG's postgres user), which also runs `manager operator` as Dockerfile.plugin's
# distroless image would. The postgres user 26 is added so that the tools' getpwuid() finds a name.
img_barman_cloud() {
  [[ -s $IMAGES_DIR/barman-cloud.tar ]] && return
  [[ -x $BARMAN_CLOUD_BIN/manager ]] || { log "barman-cloud: $BARMAN_CLOUD_BIN/manager missing (run cluster/build.sh barman-cloud first)"; return 1; }
  bash "$here/rootfs.sh" barman-cloud
  local w; w=$(mktemp -d)
  tar -C "$w" -xf "$R/barman-cloud-$BARMAN_VERSION.tar" ./etc/passwd ./etc/group
  echo 'postgres:x:26:26:PostgreSQL:/var/lib/postgresql:/bin/sh' >>"$w/etc/passwd"
  echo 'postgres:x:26:' >>"$w/etc/group"
  install -m 755 "$BARMAN_CLOUD_BIN/manager" "$w/manager"
  mk_layer "$w/layer.tar" "manager=$w/manager" "etc/passwd=$w/etc/passwd" "etc/group=$w/etc/group"
  LAYERS=("$R/barman-cloud-$BARMAN_VERSION.tar" "$w/layer.tar")
  oci_build barman-cloud "$IMG_BARMAN_CLOUD" --config.entrypoint /manager --config.user 26:26 \
    --config.env "PATH=/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" --config.env LANG=C.UTF-8
  rm -rf "$w"
}

img_curl() {
  [[ -s $IMAGES_DIR/curl.tar ]] && return
  local w; w=$(mktemp -d)
  mk_layer "$w/layer.tar" "usr/local/bin/curl-entrypoint.sh=$here/images/curl-entrypoint.sh"
  LAYERS=("$R/tools.tar" "$w/layer.tar")
  # same contract as curlimages/curl: ENTRYPOINT runs a command or passes args to curl
  oci_build curl "$IMG_CURL" --config.entrypoint /usr/local/bin/curl-entrypoint.sh --config.cmd curl
  rm -rf "$w"
}

img_billing() {
  local bin=${BILLING_BINARY:-$repo/target/release/billing}
  if [[ ! -x $bin ]]; then
    log "billing: $bin not built (cargo build --release --locked -p billing); skipping the billing image"
    return 1
  fi
  local sum; sum=$(sha256sum "$bin" | cut -c1-16)
  if [[ -s $IMAGES_DIR/billing.tar && $(cat "$IMAGES_DIR/billing.sum" 2>/dev/null) == "$sum" ]]; then return; fi
  local w; w=$(mktemp -d)
  printf 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$w/passwd.add"
  mkdir -p "$w/home" && chown 65532:65532 "$w/home"
  tar -C "$w" -xf "$R/base.tar" ./etc/passwd ./etc/group
  cat "$w/passwd.add" >>"$w/etc/passwd"
  echo 'nonroot:x:65532:' >>"$w/etc/group"
  install -m 755 "$bin" "$w/billing"
  mk_layer "$w/layer.tar" "usr/local/bin/billing=$w/billing" "etc/passwd=$w/etc/passwd" \
    "etc/group=$w/etc/group" "home/nonroot=$w/home"
  LAYERS=("$R/base.tar" "$w/layer.tar")
  local t first=
  for t in $BILLING_TAGS; do
    oci_build "billing-$t" "$IMG_BILLING_REPO:$t" --config.entrypoint /usr/local/bin/billing \
      --config.user 65532:65532 --config.exposedports 8080/tcp
    first=${first:-$t}
  done
  echo "$sum" >"$IMAGES_DIR/billing.sum"
  ln -sf "billing-$first.tar" "$IMAGES_DIR/billing.tar"
  rm -rf "$w"
}

what=${1:-all}
case $what in
  base)
    bash "$here/rootfs.sh"
    img_pause
    img_postgres
    img_curl
    img_from_go coredns "$IMG_COREDNS" "$COREDNS_BIN/coredns"
    img_from_go storage-provisioner "$IMG_PROVISIONER" "$PROVISIONER_BIN/storage-provisioner"
    img_from_go prometheus "$IMG_PROMETHEUS" "$PROMETHEUS_BIN/prometheus"
    ;;
  cnpg)
    img_cnpg_operator
    img_cnpg_postgres
    ;;
  billing) img_billing ;;
  pause) img_pause ;;
  postgres) img_postgres ;;
  curl) img_curl ;;
  prometheus) img_from_go prometheus "$IMG_PROMETHEUS" "$PROMETHEUS_BIN/prometheus" ;;
  versitygw) img_from_go versitygw "$IMG_VERSITYGW" "$VERSITYGW_BIN/versitygw" ;;
  barman-cloud) img_barman_cloud ;;
  backup)
    img_from_go versitygw "$IMG_VERSITYGW" "$VERSITYGW_BIN/versitygw"
    img_barman_cloud
    ;;
  all) "$0" base; img_billing || true ;;
  *) echo "usage: $0 [all|base|billing|cnpg|pause|postgres|curl|prometheus|versitygw|barman-cloud|backup]" >&2; exit 2 ;;
esac
