#!/usr/bin/env bash
# A real S3 server on the local cluster for CloudNativePG's WAL archive and base backups: versitygw (built from
# its Go module: build.sh versitygw, images.sh versitygw) with its posix backend, in namespace s3, on a claim of
# its own (so that the backups outlive the database's volumes), at http://versitygw.s3.svc:7070 as
# values/ha-backup.yaml says. Plain HTTP inside the cluster; a real object store is reached over https://.
#
#   cluster/cnpg/object-store.sh install        the namespace, its root key pair (Secret s3/versitygw-root, made
#                                               once with random keys), the claim, the server; wait for it and
#                                               make the bucket BUCKET (default billing-backups)
#   cluster/cnpg/object-store.sh credentials    print "ACCESS_KEY_ID SECRET_ACCESS_KEY" of that key pair
#   cluster/cnpg/object-store.sh endpoint       print the Service's http://<cluster IP>:7070 (reachable from this host)
set -euo pipefail
# shellcheck source=cluster/common.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/common.sh"
S3_NS=s3
BUCKET=${BUCKET:-billing-backups}

credentials() {
  local pair
  pair=$(kc -n "$S3_NS" get secret versitygw-root -o go-template='{{.data.ACCESS_KEY_ID | base64decode}} {{.data.SECRET_ACCESS_KEY | base64decode}}') \
    || die "no Secret $S3_NS/versitygw-root (cluster/cnpg/object-store.sh install first)"
  echo "$pair"
}

endpoint() { echo "http://$(kc -n "$S3_NS" get svc versitygw -o jsonpath='{.spec.clusterIP}'):7070"; }

install() {
  kc get namespace "$S3_NS" >/dev/null 2>&1 || kc create namespace "$S3_NS" >/dev/null
  if ! kc -n "$S3_NS" get secret versitygw-root >/dev/null 2>&1; then
    kc -n "$S3_NS" create secret generic versitygw-root \
      --from-literal=ACCESS_KEY_ID="billing$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')" \
      --from-literal=SECRET_ACCESS_KEY="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >/dev/null
  fi
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: versitygw-data
  namespace: $S3_NS
  labels: {app.kubernetes.io/name: versitygw, app.kubernetes.io/component: object-store}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 2Gi}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: versitygw
  namespace: $S3_NS
  labels: {app.kubernetes.io/name: versitygw, app.kubernetes.io/component: object-store}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector:
    matchLabels: {app.kubernetes.io/name: versitygw}
  template:
    metadata:
      labels: {app.kubernetes.io/name: versitygw, app.kubernetes.io/component: object-store}
    spec:
      automountServiceAccountToken: false
      containers:
        - name: versitygw
          image: $IMG_VERSITYGW
          imagePullPolicy: IfNotPresent
          args: [--port, ":7070", posix, /data]
          env:
            - name: ROOT_ACCESS_KEY_ID
              valueFrom: {secretKeyRef: {name: versitygw-root, key: ACCESS_KEY_ID}}
            - name: ROOT_SECRET_ACCESS_KEY
              valueFrom: {secretKeyRef: {name: versitygw-root, key: SECRET_ACCESS_KEY}}
          ports: [{name: s3, containerPort: 7070}]
          readinessProbe: {tcpSocket: {port: s3}, periodSeconds: 2}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes:
        - name: data
          persistentVolumeClaim: {claimName: versitygw-data}
---
apiVersion: v1
kind: Service
metadata:
  name: versitygw
  namespace: $S3_NS
  labels: {app.kubernetes.io/name: versitygw, app.kubernetes.io/component: object-store}
spec:
  selector: {app.kubernetes.io/name: versitygw}
  ports: [{name: s3, port: 7070, targetPort: s3}]
EOF
  kc -n "$S3_NS" rollout status deploy/versitygw --timeout=120s >/dev/null \
    || { kc -n "$S3_NS" logs deploy/versitygw --tail=20 >&2 || true; die "versitygw did not become ready"; }
  local url creds
  url=$(endpoint); creds=$(credentials)
  # The bucket, made through the S3 API itself: a PUT /<bucket> signed with AWS Signature V4 by curl (the
  # payload's hash, of an empty body, is a header S3 requires); 409 when it is there already.
  local code s3=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "${creds% *}:${creds#* }"
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --retry 10 --retry-delay 1 --retry-connrefused \
    "${s3[@]}" -X PUT "$url/$BUCKET") || code=000
  [[ $code == 200 || $code == 409 ]] || die "versitygw at $url did not make the bucket $BUCKET (HTTP $code)"
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "${s3[@]}" "$url/$BUCKET?list-type=2") || code=000
  [[ $code == 200 ]] || die "versitygw at $url does not list the bucket $BUCKET (HTTP $code)"
  log "versitygw $VERSITYGW_VERSION serving s3://$BUCKET at http://versitygw.$S3_NS.svc:7070 ($url from this host), on claim $S3_NS/versitygw-data"
}

case ${1:-} in
  install) install ;;
  credentials) credentials ;;
  endpoint) endpoint ;;
  *) echo "usage: $0 install|credentials|endpoint" >&2; exit 2 ;;
esac
