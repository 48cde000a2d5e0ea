# shellcheck shell=bash disable=SC2034 # sourced: the variables are used by the scripts that source it
# Versions of everything the local cluster builds; the build cache is keyed by them.
K8S_VERSION=v1.34.4                  # k8s.io/kubernetes (staging modules at v0.34.4, see k8s/go.mod)
COREDNS_VERSION=v1.14.7              # github.com/coredns/coredns
MINIKUBE_VERSION=v1.38.1             # k8s.io/minikube/cmd/storage-provisioner
ETCD_VERSION=v3.6.4                  # go.etcd.io/etcd/server/v3 as required in k8s/go.mod (Debian's 3.4.23 is too old)
PROMETHEUS_MODULE_VERSION=v0.316.0   # github.com/prometheus/prometheus (Go module v0.316.0 = Prometheus 3.16.0)
PROMETHEUS_VERSION=v3.16.0           # the release that module version is (its VERSION file)
PROMETHEUS_OPERATOR_VERSION=v0.94.1  # github.com/prometheus-operator/prometheus-operator: its CRDs (example/prometheus-operator-crd); v0.95.x answer 403 here
CNPG_VERSION=v1.30.0                 # github.com/cloudnative-pg/cloudnative-pg (see cnpg/go.mod): the HA scenario's operator
VERSITYGW_VERSION=v1.8.0             # github.com/versity/versitygw: an S3 server (posix backend) for CloudNativePG's backups (the HA scenario)
BARMAN_CLOUD_PLUGIN_VERSION=v0.14.0  # github.com/cloudnative-pg/plugin-barman-cloud: v0.15.0's dependencies barman-cloud@v0.6.0 and machinery@v0.6.0 answer 403 here; v0.14.0 requires exactly cloudnative-pg v1.30.0
BARMAN_VERSION=3.19.1                # PyPI barman, the barman-cloud-* tools in the plugin's sidecar (as plugin v0.14.0 pins it; 3.20.x needs Python >= 3.12, bookworm has 3.11)
CLUSTER_CACHE=${CLUSTER_CACHE:-/var/cache/billing-cluster}
K8S_BIN=$CLUSTER_CACHE/k8s-$K8S_VERSION/bin
COREDNS_BIN=$CLUSTER_CACHE/coredns-$COREDNS_VERSION/bin
PROVISIONER_BIN=$CLUSTER_CACHE/minikube-$MINIKUBE_VERSION/bin
ETCD_BIN=$CLUSTER_CACHE/etcd-$ETCD_VERSION/bin
PROMETHEUS_BIN=$CLUSTER_CACHE/prometheus-$PROMETHEUS_VERSION/bin
CNPG_BIN=$CLUSTER_CACHE/cnpg-$CNPG_VERSION/bin
VERSITYGW_BIN=$CLUSTER_CACHE/versitygw-$VERSITYGW_VERSION/bin
BARMAN_CLOUD_BIN=$CLUSTER_CACHE/plugin-barman-cloud-$BARMAN_CLOUD_PLUGIN_VERSION/bin
DEBIAN_SUITE=bookworm                # base of the postgres, curl and billing images (matches the service's Debian 12 glibc)
PG_MAJOR=15                          # Debian bookworm's postgresql-15
PAUSE_TAG=3.10-local
IMAGES_DIR=$CLUSTER_CACHE/images
IMG_PAUSE=localhost/pause:$PAUSE_TAG
IMG_POSTGRES=localhost/postgres:$PG_MAJOR-debian12
IMG_CURL=localhost/curl:debian12
IMG_COREDNS=localhost/coredns:$COREDNS_VERSION
IMG_PROVISIONER=localhost/storage-provisioner:$MINIKUBE_VERSION
IMG_PROMETHEUS=localhost/prometheus:$PROMETHEUS_VERSION
IMG_CNPG=localhost/cloudnative-pg:${CNPG_VERSION#v}
# CloudNativePG reads the major version from the tag's leading number, and wants the postgres user as UID 26
IMG_CNPG_POSTGRES=localhost/cnpg-postgresql:$PG_MAJOR-debian12
IMG_VERSITYGW=localhost/versitygw:${VERSITYGW_VERSION#v}
# the Barman Cloud plugin's operator and its sidecar in one image: /manager (cmd/manager) and barman-cloud-* in /venv
IMG_BARMAN_CLOUD=localhost/plugin-barman-cloud:${BARMAN_CLOUD_PLUGIN_VERSION#v}-barman-$BARMAN_VERSION
IMG_BILLING_REPO=localhost/billing
BILLING_TAGS="v1.1 v2.0"
