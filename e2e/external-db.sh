#!/usr/bin/env bash
# The chart's external-database mode (issue 11 §2) on a real cluster: a PostgreSQL the chart does not make, with
# TLS on and a certificate from a CA made here, and billing installed against it by host, sslmode=verify-full and
# the CA from a ConfigMap. Passes when a payment made through billing is in that server's ledger and every
# connection billing holds there is TLS. Everything is made in a namespace of its own and removed afterwards.
#
#   e2e/external-db.sh --kubectl K --helm H --client-image IMG --postgres-image IMG [--set k=v ...]
#
# The --set values go to helm install (the local cluster's image names). Run by cluster/e2e-local.sh after the
# course scenario.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KUBECTL=kubectl HELM=helm CLIENT_IMAGE="" PG_IMAGE="" sets=()
while (($#)); do
  case $1 in
    --kubectl) KUBECTL=$2; shift 2 ;;
    --helm) HELM=$2; shift 2 ;;
    --client-image) CLIENT_IMAGE=$2; shift 2 ;;
    --postgres-image) PG_IMAGE=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "external-db: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $CLIENT_IMAGE && -n $PG_IMAGE ]] || { echo "external-db: --client-image and --postgres-image are required" >&2; exit 2; }
command -v openssl >/dev/null || { echo "external-db: openssl is required (Debian package openssl)" >&2; exit 1; }

t0=$(date +%s)
say() { printf '[external-db %4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
fail() { say "FAILED: $*"; exit 1; }
NS=billing-ext-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
RELEASE=billing-ext
HOST=external-db.$NS.svc.cluster.local
work=$(mktemp -d)
k() { "$KUBECTL" -n "$NS" "$@"; }
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    say "diagnostics:"
    k get pods -o wide 2>&1 | sed 's/^/  /' || true
    k logs deploy/external-db --tail=30 2>&1 | sed 's/^/  external-db: /' || true
    k logs -l app.kubernetes.io/instance=$RELEASE --all-containers --tail=30 2>&1 | sed 's/^/  billing: /' || true
  fi
  timeout 120 "$HELM" --namespace "$NS" uninstall "$RELEASE" --wait --timeout 90s >/dev/null 2>&1 || true
  timeout 150 "$KUBECTL" delete namespace "$NS" --wait=true --timeout=140s >/dev/null 2>&1 || say "namespace $NS not gone in time"
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

say "a CA and a server certificate for $HOST (openssl)"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=billing e2e CA" -keyout "$work/ca.key" -out "$work/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$HOST" -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s,DNS:external-db\n' \
  "$HOST" >"$work/ext.cnf"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
  -extfile "$work/ext.cnf" -out "$work/tls.crt" 2>/dev/null

"$KUBECTL" create namespace "$NS" >/dev/null
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
k create secret tls external-db-tls --cert="$work/tls.crt" --key="$work/tls.key" >/dev/null
k create secret generic external-db-password --from-literal=password="$password" >/dev/null
k create configmap external-db-ca --from-file=ca.crt="$work/ca.crt" >/dev/null

say "PostgreSQL outside the chart, ssl=on, in namespace $NS"
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: external-db
spec:
  selector: {app: external-db}
  ports: [{name: postgres, port: 5432, targetPort: 5432}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: external-db
spec:
  replicas: 1
  selector: {matchLabels: {app: external-db}}
  template:
    metadata:
      labels: {app: external-db}
    spec:
      containers:
        - name: postgres
          image: $PG_IMAGE
          imagePullPolicy: IfNotPresent
          # PostgreSQL wants its key owned by its own user with mode 0600; a Secret volume gives root's.
          command: [/bin/sh, -c]
          args:
            - >-
              install -d -o postgres -g postgres -m 0700 /tls &&
              install -o postgres -g postgres -m 0600 /tls-src/tls.key /tls/server.key &&
              install -o postgres -g postgres -m 0644 /tls-src/tls.crt /tls/server.crt &&
              exec docker-entrypoint.sh postgres -c ssl=on -c ssl_cert_file=/tls/server.crt -c ssl_key_file=/tls/server.key
          env:
            - {name: POSTGRES_USER, value: billing}
            - {name: POSTGRES_DB, value: billing}
            - name: POSTGRES_PASSWORD
              valueFrom: {secretKeyRef: {name: external-db-password, key: password}}
          ports: [{containerPort: 5432}]
          readinessProbe:
            exec: {command: [pg_isready, -h, 127.0.0.1, -U, billing, -d, billing]}
            periodSeconds: 2
          volumeMounts:
            - {name: tls-src, mountPath: /tls-src, readOnly: true}
            - {name: tls, mountPath: /tls}
            - {name: data, mountPath: /var/lib/postgresql/data}
      volumes:
        - {name: tls-src, secret: {secretName: external-db-tls}}
        - {name: tls, emptyDir: {}}
        - {name: data, emptyDir: {}}
EOF
k rollout status deploy/external-db --timeout=120s >/dev/null || fail "the external PostgreSQL did not become ready"
say "  ok: external-db ready"

say "helm install $RELEASE: postgresql.enabled=false, externalDatabase.host=$HOST, sslmode=verify-full, CA from ConfigMap external-db-ca"
"$HELM" --namespace "$NS" install "$RELEASE" "$repo/charts/billing" -f "$repo/values/task1.yaml" "${sets[@]}" \
  --set postgresql.enabled=false \
  --set externalDatabase.host="$HOST" \
  --set externalDatabase.sslmode=verify-full \
  --set externalDatabase.caCert.configMapName=external-db-ca \
  --set externalDatabase.existingSecret=external-db-password \
  --wait --timeout 180s >/dev/null || fail "helm install against the external database did not become ready"
made=$(k get statefulset,deployment,pvc,storageclass -l app.kubernetes.io/instance=$RELEASE -o name 2>/dev/null | tr '\n' ' ')
case $made in
  *postgresql* | *persistentvolumeclaim* | *storageclass*) fail "the chart made database objects anyway: $made" ;;
esac
say "  ok: installed; the chart made only $made"

# A refused connection means kube-proxy has not yet programmed the new Service (seen once, 3 s after the pod was
# Ready); nothing was sent then, so retrying it cannot pay twice.
say "a payment through billing"
out=$(printf 'go\n' | timeout 150 "$KUBECTL" -n "$NS" run ext-client --rm -i --quiet --restart=Never \
  --image="$CLIENT_IMAGE" --image-pull-policy=IfNotPresent --pod-running-timeout=90s --command -- \
  sh -c "read -r go; curl -sS --max-time 10 --retry 20 --retry-delay 1 --retry-connrefused -X POST -w '\n%{http_code}' 'http://$RELEASE:8080/add?client_id=external&amount=42'") \
  || fail "the client pod failed: $out"
code=${out##*$'\n'}
say "  POST /add -> HTTP $code: ${out%$'\n'*}"
[[ $code == 201 ]] || fail "the payment was not created"

psql_ext() { k exec deploy/external-db -- psql -h /var/run/postgresql -U billing -d billing -At -c "$1"; }
rows=$(psql_ext "SELECT count(*) FROM transactions WHERE client_id = 'external' AND amount = 42")
[[ $rows == 1 ]] || fail "the payment is not in the external server's ledger (rows: $rows)"
tls=$(psql_ext "SELECT string_agg(DISTINCT s.ssl::text, ',') || ' ' || count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'billing'")
say "  billing's connections on the external server: ssl ${tls% *}, ${tls#* } of them"
[[ ${tls% *} == true ]] || fail "billing has connections there without TLS, or none: $tls"
say "ok: billing keeps its ledger on a PostgreSQL outside the chart, over TLS checked with verify-full against the CA from a ConfigMap"
