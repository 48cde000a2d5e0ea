"""The chart's switches: external database, existing Secret/claim, keep,
NetworkPolicy, StorageClass ownership, naming, the helm test hook, NOTES."""

from __future__ import annotations

import base64

import pytest
from conftest import container, env_of, notes, render, render_error, run_helm, CHART

EXTERNAL = {
    "postgresql.enabled": "false",
    "externalDatabase.url": "postgres://billing@db.example.com:5432/billing?sslmode=disable",
}


def app_env(r, kind="Deployment", name="billing"):
    return env_of(container(r.get(kind, name)["spec"]["template"]["spec"], "billing"))


def test_external_database_with_password_in_values(helm):
    r = render(helm, sets={**EXTERNAL, "externalDatabase.password": "p@ss:w/rd%"})
    assert not [d for d in r.docs if d["metadata"]["labels"].get("app.kubernetes.io/name") == "postgresql"]
    env = app_env(r)
    assert env["DATABASE_URL"]["value"] == EXTERNAL["externalDatabase.url"]
    assert env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "billing-database", "key": "password"}
    secret = r.get("Secret", "billing-database")
    # Any character, stored as is: the service never puts it in a URL.
    assert base64.b64decode(secret["data"]["password"]).decode() == "p@ss:w/rd%"


def test_external_database_with_existing_secret(helm):
    r = render(
        helm,
        sets={**EXTERNAL, "externalDatabase.existingSecret": "db-creds", "externalDatabase.existingSecretPasswordKey": "pw"},
    )
    assert not r.all("Secret")
    assert app_env(r)["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "db-creds", "key": "pw"}


def test_external_database_without_password(helm):
    r = render(helm, sets=EXTERNAL)
    assert "DATABASE_PASSWORD" not in app_env(r)
    assert not r.all("Secret")


def test_external_database_requires_a_url_or_a_host(helm):
    err = render_error(helm, "--set", "postgresql.enabled=false")
    assert "externalDatabase.host (with port, database, user) or externalDatabase.url is required" in err


def test_bundled_postgresql_with_existing_secret(helm):
    r = render(
        helm,
        values=("task2.yaml",),
        sets={"postgresql.auth.existingSecret": "pg-creds", "postgresql.auth.existingSecretPasswordKey": "pgpass"},
    )
    assert not r.has("Secret", "billing-postgresql")
    assert app_env(r, "StatefulSet", "billing-stateful")["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg-creds",
        "key": "pgpass",
    }
    pod = r.get("Deployment", "billing-postgresql")["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "password"]
    assert vol["secret"]["secretName"] == "pg-creds"
    assert vol["secret"]["items"] == [{"key": "pgpass", "path": "password"}]


def test_existing_claim(helm):
    r = render(helm, sets={"postgresql.persistence.existingClaim": "recovered-data"})
    assert not r.all("PersistentVolumeClaim")
    pod = r.get("Deployment", "billing-postgresql")["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "data"]
    assert vol["persistentVolumeClaim"] == {"claimName": "recovered-data"}


def test_keep_false_lets_uninstall_delete_claim_and_secret(helm):
    r = render(helm, sets={"postgresql.persistence.keep": "false"})
    for kind in ("PersistentVolumeClaim", "Secret"):
        annotations = r.get(kind, "billing-postgresql")["metadata"].get("annotations") or {}
        assert "helm.sh/resource-policy" not in annotations, kind


def test_network_policy_admits_only_billing_pods(helm):
    # On by default (issue 10 §2): harmless where the network plugin ignores it.
    assert render(helm).all("NetworkPolicy")
    assert not render(helm, sets={"networkPolicy.enabled": "false"}).all("NetworkPolicy")
    r = render(helm, values=("task2.yaml",))
    (np,) = r.all("NetworkPolicy")
    pg_pod_labels = r.get("Deployment", "billing-postgresql")["spec"]["template"]["metadata"]["labels"]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= pg_pod_labels.items()
    assert np["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = np["spec"]["ingress"]
    (peer, clients) = rule["from"]
    app_pod_labels = r.get("StatefulSet", "billing-stateful")["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= app_pod_labels.items()
    test_pod_labels = r.get("Pod", "billing-test-api")["metadata"]["labels"]
    assert not peer["podSelector"]["matchLabels"].items() <= test_pod_labels.items()
    # The chart's own clients of PostgreSQL (helm test's ledger check, the role-setup Job) are admitted by a
    # label of their own, which billing's pods do not need and other pods of the release do not carry.
    job_pod_labels = r.get("Job", "billing-postgresql-roles")["spec"]["template"]["metadata"]["labels"]
    for labels in (test_pod_labels, job_pod_labels):
        assert clients["podSelector"]["matchLabels"].items() <= labels.items()
    pg_labels = r.get("Deployment", "billing-postgresql")["spec"]["template"]["metadata"]["labels"]
    assert not clients["podSelector"]["matchLabels"].items() <= pg_labels.items()
    assert rule["ports"] == [{"port": "postgresql", "protocol": "TCP"}]
    # Without the bundled PostgreSQL there is nothing to protect.
    assert not render(helm, sets={**EXTERNAL, "networkPolicy.enabled": "true"}).all("NetworkPolicy")


def test_storage_class_not_created_uses_the_cluster_default(helm):
    r = render(helm, values=("task2.yaml",), sets={"storageClass.create": "false"})
    assert not r.all("StorageClass")
    assert "storageClassName" not in r.get("PersistentVolumeClaim", "billing-postgresql")["spec"]
    (vct,) = r.get("StatefulSet", "billing-stateful")["spec"]["volumeClaimTemplates"]
    assert "storageClassName" not in vct["spec"]


def test_storage_class_shared_with_another_release(helm):
    r = render(helm, values=("task2.yaml",), sets={"storageClass.create": "false", "storageClass.name": "billing-retain"})
    assert not r.all("StorageClass")
    assert r.get("PersistentVolumeClaim", "billing-postgresql")["spec"]["storageClassName"] == "billing-retain"


def test_per_volume_storage_class_override(helm):
    r = render(helm, sets={"postgresql.persistence.storageClassName": "ssd", "postgresql.persistence.size": "5Gi"})
    pvc = r.get("PersistentVolumeClaim", "billing-postgresql")
    assert pvc["spec"]["storageClassName"] == "ssd"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"


@pytest.mark.parametrize(
    ("release", "base"),
    [("billing", "billing"), ("my-billing", "my-billing"), ("shop", "shop-billing")],
)
def test_names_follow_the_release(helm, release, base):
    proc = run_helm(helm, "template", release, str(CHART), "-f", str(CHART.parents[1] / "values" / "task2.yaml"))
    assert proc.returncode == 0, proc.stderr
    import yaml

    names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(proc.stdout) if d}
    assert ("StatefulSet", f"{base}-stateful") in names
    assert ("Service", f"{base}-stateful") in names
    assert ("Service", base) in names
    assert ("Deployment", f"{base}-postgresql") in names
    assert ("StorageClass", f"{base}-retain") in names


def test_fullname_override(helm):
    r = render(helm, values=("task2.yaml",), sets={"fullnameOverride": "pay"})
    assert r.get("StatefulSet", "pay-stateful")["spec"]["serviceName"] == "pay-stateful"
    assert app_env(r, "StatefulSet", "pay-stateful")["DATABASE_URL"]["value"] == "postgres://billing@pay-postgresql:5432/billing"


def test_helm_test_pod_in_deployment_mode(helm):
    pod = render(helm, values=("task1.yaml",)).get("Pod", "billing-test-api")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = container(pod["spec"], "api")["args"][0]
    assert "http://billing.default.svc.cluster.local:8080" in script
    assert "billing-stateful" not in script
    # proves the write path without committing (tests/chart/test_helm_test_script.py runs it)
    for needle in ("/ping", "/readyz", "/add?client_id=helm-test&amount=0", "400"):
        assert needle in script
    assert "ROLLBACK" in container(pod["spec"], "ledger")["args"][0]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["restartPolicy"] == "Never"


def test_helm_test_pod_checks_every_stateful_pod(helm):
    pod = render(helm, "--namespace", "course", values=("task2.yaml",)).get("Pod", "billing-test-api")
    script = container(pod["spec"], "api")["args"][0]
    assert "http://billing.course.svc.cluster.local:8080" in script
    for i in range(3):
        assert f"http://billing-stateful-{i}.billing-stateful.course.svc.cluster.local:8080" in script
    assert "billing-stateful-3" not in script


def test_notes_deployment_mode():
    text = notes("helm4", "-f", str(CHART.parents[1] / "values" / "task1.yaml"))
    assert "installed as a Deployment (1 replica)" in text
    assert "curl http://billing.default.svc.cluster.local:8080/ping" in text
    assert "add?client_id=" in text
    assert "billing-stateful" not in text
    assert "helm test billing" in text
    assert "PersistentVolumeClaim billing-postgresql (StorageClass billing-retain)" in text


def test_notes_statefulset_mode_names_every_pod_with_its_namespace():
    text = notes("helm4", "-f", str(CHART.parents[1] / "values" / "task2.yaml"), namespace="course")
    assert "installed as a StatefulSet (3 replicas) in namespace course" in text
    for i in range(3):
        assert f"curl http://billing-stateful-{i}.billing-stateful.course.svc.cluster.local:8080/ping" in text
        assert f"kubectl -n course exec billing-stateful-{i} -c billing -- cat /var/log/app.log" in text
    assert '"claimName":"log-billing-stateful-0"' in text
    assert "billing-stateful-3" not in text
    assert "curl http://billing.course.svc.cluster.local:8080/ping" in text


def test_kube_version_floor(helm):
    err = render_error(helm, "--kube-version", "1.26.0")
    assert "chart requires kubeVersion: >=1.27.0-0 which is incompatible with Kubernetes v1.26.0" in err
    ok = run_helm(helm, "template", "billing", str(CHART), "--kube-version", "1.27.0")
    assert ok.returncode == 0, ok.stderr


def test_connection_budget_of_the_bundled_postgresql(helm):
    """Every pod may open databasePoolSize + databaseReadConnections connections; more than 90 in all would
    exceed the bundled PostgreSQL's max_connections under load, so the chart refuses it at install time."""
    err = render_error(helm, "--set", "workload.kind=StatefulSet", "--set", "workload.replicas=5")
    assert "5 pods at once (workload.replicas 5 + 0 surge pods of a rolling update) x (config.databasePoolSize 20 + config.databaseReadConnections 1) = 105 connections" in err
    assert "Lower config.databasePoolSize, workload.replicas or autoscaling.maxReplicas" in err
    # Deployment mode: 2 replicas + 1 surge pod
    err = render_error(helm, "--set", "workload.replicas=2", "--set", "config.databasePoolSize=29",
                       "--set", "config.databaseReadConnections=2")
    assert "= 93 connections" in err
    # 90 exactly is allowed, and each pod is told its own share.
    r = render(helm, sets={"workload.replicas": "2", "config.databasePoolSize": "28", "config.databaseReadConnections": "2"})
    env = app_env(r)
    assert (env["DATABASE_POOL_SIZE"]["value"], env["DATABASE_READ_CONNECTIONS"]["value"]) == ("28", "2")
    # An external database has its own limit, which the chart cannot know.
    r = render(helm, sets={**EXTERNAL, "workload.replicas": "5"})
    assert r.get("Deployment", "billing")["spec"]["replicas"] == 5


def test_external_database_tls_settings(helm):
    """Every libpq sslmode is passed through; what billing would refuse at start the chart refuses first: an
    unknown mode, verify-ca/verify-full without a CA (from caCert or sslrootcert=), system roots without
    verify-full."""
    for query in ("sslmode=require", "sslmode=allow", "sslmode=verify-full&sslrootcert=system",
                  "sslmode=verify-ca&sslrootcert=/etc/ssl/certs/ca-certificates.crt", "sslrootcert=system"):
        url = f"postgres://billing@db:5432/billing?{query}"
        r = render(helm, sets={"postgresql.enabled": "false", "externalDatabase.url": url})
        assert app_env(r)["DATABASE_URL"]["value"] == url
    refused = {
        "sslmode=verify-full": "externalDatabase asks for sslmode=verify-full, which needs the CA certificate",
        "application_name=x&sslmode=verify-ca": "externalDatabase asks for sslmode=verify-ca, which needs the CA certificate",
        "sslmode=verify": "externalDatabase.url asks for sslmode=verify, which billing does not know",
        "sslmode=require&sslrootcert=system": "externalDatabase.url combines sslrootcert=system with sslmode=require",
    }
    for query, message in refused.items():
        err = render_error(helm, "--set", "postgresql.enabled=false",
                           "--set", f"externalDatabase.url=postgres://billing@db:5432/billing?{query}")
        assert message in err, err


EXTERNAL_HOST = {"postgresql.enabled": "false", "externalDatabase.host": "db.example.com",
                 "externalDatabase.port": "6432", "externalDatabase.database": "ledger",
                 "externalDatabase.user": "payer", "externalDatabase.existingSecret": "db-creds"}


def _mounts(r, kind="Deployment", name="billing"):
    pod = r.get(kind, name)["spec"]["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "billing")
    return c.get("volumeMounts", []), pod.get("volumes", [])


def test_external_database_from_its_fields_with_a_ca_from_a_secret(helm):
    """host, port, database, user and sslmode make the URL; the CA comes from a Secret, mounted read-only and given
    as PGSSLROOTCERT; the chart then makes no PostgreSQL, StorageClass or claim."""
    r = render(helm, sets={**EXTERNAL_HOST, "externalDatabase.sslmode": "verify-full",
                           "externalDatabase.caCert.secretName": "db-ca", "externalDatabase.caCert.key": "root.pem"})
    env = app_env(r)
    assert env["DATABASE_URL"]["value"] == "postgres://payer@db.example.com:6432/ledger?sslmode=verify-full"
    assert env["PGSSLROOTCERT"]["value"] == "/etc/billing/database-ca/root.pem"
    assert env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "db-creds"
    mounts, volumes = _mounts(r)
    assert {"name": "database-ca", "mountPath": "/etc/billing/database-ca", "readOnly": True} in mounts
    ca = next(v for v in volumes if v["name"] == "database-ca")
    assert ca["secret"] == {"secretName": "db-ca", "items": [{"key": "root.pem", "path": "root.pem"}]}
    assert not r.all("StorageClass") and not r.all("PersistentVolumeClaim")
    assert not [o for o in r.all("Deployment") if "postgresql" in o["metadata"]["name"]]


def test_external_database_ca_from_a_configmap_in_statefulset_mode(helm):
    r = render(helm, "-f", str(CHART.parent.parent / "values" / "task2.yaml"),
               sets={**EXTERNAL_HOST, "externalDatabase.sslmode": "verify-ca",
                     "externalDatabase.caCert.configMapName": "db-ca"})
    env = app_env(r, "StatefulSet", "billing-stateful")
    assert env["PGSSLROOTCERT"]["value"] == "/etc/billing/database-ca/ca.crt"
    mounts, volumes = _mounts(r, "StatefulSet", "billing-stateful")
    assert [m["name"] for m in mounts] == ["log", "database-ca"]
    ca = next(v for v in volumes if v["name"] == "database-ca")
    assert ca["configMap"] == {"name": "db-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}


def test_half_filled_external_database_settings_are_refused_by_name(helm):
    cases = {
        ("externalDatabase.user",): "externalDatabase.host is set, so externalDatabase.user is required too",
        ("externalDatabase.database",): "externalDatabase.host is set, so externalDatabase.database is required too",
    }
    for cleared, message in cases.items():
        args = [a for k, v in EXTERNAL_HOST.items() for a in ("--set", f"{k}={v}")]
        args += [a for k in cleared for a in ("--set", f"{k}=")]
        assert message in render_error(helm, *args)
    both = [a for k, v in EXTERNAL_HOST.items() for a in ("--set", f"{k}={v}")]
    assert "externalDatabase.url and externalDatabase.host are both set" in render_error(
        helm, *both, "--set", "externalDatabase.url=postgres://b@db/b")
    assert ".secretName and .configMapName are both set" in render_error(
        helm, *both, "--set", "externalDatabase.caCert.secretName=a", "--set", "externalDatabase.caCert.configMapName=b")
    assert "give the CA one way" in render_error(
        helm, "--set", "postgresql.enabled=false", "--set", "externalDatabase.caCert.secretName=a",
        "--set", "externalDatabase.url=postgres://b@db/b?sslmode=verify-full&sslrootcert=/x.pem")
    assert "with externalDatabase.url, put sslmode= in the URL" in render_error(
        helm, "--set", "postgresql.enabled=false", "--set", "externalDatabase.sslmode=require",
        "--set", "externalDatabase.url=postgres://b@db/b")


def test_server_limits_and_log_format_are_passed_with_safe_defaults(helm):
    for values, kind, name in ((("task1.yaml",), "Deployment", "billing"), (("task2.yaml",), "StatefulSet", "billing-stateful")):
        env = app_env(render(helm, values=values), kind, name)
        assert {k: env[k]["value"] for k in (
            "LOG_FORMAT", "HEADER_READ_TIMEOUT_SECS", "BODY_READ_TIMEOUT_SECS", "MAX_HEADER_BYTES", "MAX_CONNECTIONS",
            "LOG_WRITE_TIMEOUT_SECS", "IDEMPOTENCY_KEY_REQUIRED",
        )} == {
            "LOG_FORMAT": "text",
            "HEADER_READ_TIMEOUT_SECS": "10",
            "BODY_READ_TIMEOUT_SECS": "10",
            "MAX_HEADER_BYTES": "16384",
            "MAX_CONNECTIONS": "10000",
            "LOG_WRITE_TIMEOUT_SECS": "2",
            "IDEMPOTENCY_KEY_REQUIRED": "false",
        }
    env = app_env(render(helm, sets={"config.logFormat": "json", "config.maxConnections": "500"}))
    assert (env["LOG_FORMAT"]["value"], env["MAX_CONNECTIONS"]["value"]) == ("json", "500")
    env = app_env(render(helm, sets={"config.idempotencyKeyRequired": "true"}))
    assert env["IDEMPOTENCY_KEY_REQUIRED"]["value"] == "true"
    # A string is not a switch: the schema refuses it rather than let "yes" reach billing and stop it at start.
    assert "idempotencyKeyRequired" in render_error(helm, "--set-string", "config.idempotencyKeyRequired=yes")



def test_listing_limits_reach_the_service(helm):
    env = app_env(render(helm))
    assert "GETALL_MAX_CONCURRENT" not in env, "null leaves billing its own default, a quarter of the pool"
    assert (env["GETALL_STALL_TIMEOUT_SECS"]["value"], env["GETALL_TIMEOUT_SECS"]["value"]) == ("10", "300")
    env = app_env(render(helm, sets={"config.getallMaxConcurrent": "3", "config.getallStallTimeoutSecs": "30"}))
    assert (env["GETALL_MAX_CONCURRENT"]["value"], env["GETALL_STALL_TIMEOUT_SECS"]["value"]) == ("3", "30")


def test_more_listings_than_pooled_connections_is_refused(helm):
    error = render_error(helm, "--set", "config.getallMaxConcurrent=21")
    assert "config.getallMaxConcurrent (21) must be at most config.databasePoolSize (20)" in error
