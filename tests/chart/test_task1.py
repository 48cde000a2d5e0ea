"""Task 1: billing as a Deployment, PostgreSQL on a Retain volume."""

from __future__ import annotations

import base64
import re

from conftest import container, env_of, render

SELECTOR_FORBIDDEN = ("helm.sh/chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by")


def task1(helm):
    return render(helm, values=("task1.yaml",))


def test_app_is_a_deployment_named_billing_with_a_clusterip_service(helm):
    r = task1(helm)
    dep = r.get("Deployment", "billing")
    assert dep["spec"]["replicas"] == 1
    assert not r.all("StatefulSet")
    assert not r.has("Service", "billing-stateful")
    svc = r.get("Service", "billing")
    assert svc["spec"]["type"] == "ClusterIP"
    assert "clusterIP" not in svc["spec"]
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    # The Service selects exactly the pods of the Deployment.
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


def test_app_container_image_port_and_pull_policy(helm):
    dep = task1(helm).get("Deployment", "billing")
    c = container(dep["spec"]["template"]["spec"], "billing")
    assert c["image"] == "billing:v1.1"
    # Locally loaded images: the kubelet must not go to a registry.
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_app_database_settings_come_from_the_secret(helm):
    dep = task1(helm).get("Deployment", "billing")
    env = env_of(container(dep["spec"]["template"]["spec"], "billing"))
    url = env["DATABASE_URL"]["value"]
    assert url == "postgres://billing@billing-postgresql:5432/billing"
    # No password in the URL, so nothing has to be URL-encoded.
    assert not re.match(r"^postgres://[^@/]*:[^@/]*@", url)
    assert env["DATABASE_PASSWORD"] == {
        "name": "DATABASE_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "billing-postgresql", "key": "password"}},
    }
    assert env["LISTEN_ADDR"]["value"] == "0.0.0.0:8080"
    assert env["DATABASE_POOL_SIZE"]["value"] == "20"
    assert env["DATABASE_READ_CONNECTIONS"]["value"] == "1"
    assert env["DATABASE_TIMEOUT_SECS"]["value"] == "5"
    assert env["RUST_LOG"]["value"] == "info"
    assert "LOG_FILE" not in env


def test_app_probes(helm):
    dep = task1(helm).get("Deployment", "billing")
    c = container(dep["spec"]["template"]["spec"], "billing")
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_app_security_context_and_resources(helm):
    dep = task1(helm).get("Deployment", "billing")
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(pod, "billing")
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    assert set(c["resources"]["limits"]) == {"cpu", "memory"}


def test_storage_class_retains_volumes(helm):
    sc = task1(helm).get("StorageClass", "billing-retain")
    assert "namespace" not in sc["metadata"], "StorageClass is cluster-scoped"
    assert sc["provisioner"] == "k8s.io/minikube-hostpath"
    assert sc["reclaimPolicy"] == "Retain"
    assert sc["allowVolumeExpansion"] is True
    assert sc["volumeBindingMode"] == "Immediate"
    assert "parameters" not in sc


def test_storage_class_settings(helm):
    sc = render(
        helm,
        sets={
            "storageClass.name": "fast-keep",
            "storageClass.provisioner": "ebs.csi.aws.com",
            "storageClass.reclaimPolicy": "Delete",
            "storageClass.allowVolumeExpansion": "false",
            "storageClass.volumeBindingMode": "WaitForFirstConsumer",
            "storageClass.parameters.type": "gp3",
            "storageClass.parameters.iops": "3000",
        },
    ).get("StorageClass", "fast-keep")
    assert sc["provisioner"] == "ebs.csi.aws.com"
    assert sc["reclaimPolicy"] == "Delete"
    assert sc["allowVolumeExpansion"] is False
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    # StorageClass parameters are strings, whatever YAML made of them.
    assert sc["parameters"] == {"type": "gp3", "iops": "3000"}


def test_kind_overlay_uses_local_path_and_waits_for_the_consumer(helm):
    sc = render(helm, values=("task1.yaml", "kind.yaml")).get("StorageClass", "billing-retain")
    assert sc["provisioner"] == "rancher.io/local-path"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["reclaimPolicy"] == "Retain"


def test_postgresql_claim(helm):
    pvc = task1(helm).get("PersistentVolumeClaim", "billing-postgresql")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
    assert pvc["spec"]["storageClassName"] == "billing-retain"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_postgresql_deployment(helm):
    r = task1(helm)
    dep = r.get("Deployment", "billing-postgresql")
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"]["app"] == "postgres"
    assert spec["template"]["metadata"]["labels"]["app"] == "postgres"
    pod = spec["template"]["spec"]
    c = container(pod, "postgresql")
    repo, tag = c["image"].rsplit(":", 1)
    assert repo == "postgres"
    # A pinned release of a supported major version (PostgreSQL 14 to 18).
    assert re.fullmatch(r"(1[4-8])\.\d+(-[a-z0-9.]+)?", tag), tag
    env = env_of(c)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    data_mount = mounts["data"]["mountPath"]
    pgdata = env["PGDATA"]["value"]
    # PGDATA is a subdirectory of the mount, never the mount itself (lost+found).
    assert pgdata.startswith(data_mount.rstrip("/") + "/")
    assert pgdata != data_mount
    assert env["POSTGRES_USER"]["value"] == "postgres"  # initdb's superuser; billing is the application role
    assert env["BILLING_APP_USER"]["value"] == "billing"
    assert env["POSTGRES_DB"]["value"] == "billing"
    assert "POSTGRES_PASSWORD" not in env
    secret_file = env["POSTGRES_PASSWORD_FILE"]["value"]
    assert secret_file.startswith(mounts["superuser-password"]["mountPath"] + "/")
    assert env["BILLING_APP_PASSWORD_FILE"]["value"].startswith(mounts["password"]["mountPath"] + "/")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "billing-postgresql"}
    assert volumes["password"]["secret"]["secretName"] == "billing-postgresql"
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["exec"]["command"][0] == "pg_isready", probe
    # liveness passes a server in crash recovery (tests/chart/test_safety.py runs it)
    assert c["livenessProbe"]["exec"]["command"][:2] == ["/bin/sh", "-c"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # PostgreSQL refuses a group-writable PGDATA; only OnRootMismatch keeps
    # the kubelet from re-applying group write permission on every mount.
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    # Read-only root filesystem: the socket directory and /tmp are emptyDirs.
    assert volumes["run"] == {"name": "run", "emptyDir": {}}
    assert mounts["run"]["mountPath"] == "/var/run/postgresql"
    assert mounts["tmp"]["mountPath"] == "/tmp"


def test_postgresql_secret_and_service(helm):
    r = task1(helm)
    secret = r.get("Secret", "billing-postgresql")
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    svc = r.get("Service", "billing-postgresql")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "postgresql", "port": 5432, "targetPort": "postgresql", "protocol": "TCP"}]
    assert svc["spec"]["selector"]["app"] == "postgres"


def test_every_object_carries_the_recommended_labels(helm):
    for values in (("task1.yaml",), ("task2.yaml",)):
        r = render(helm, values=values, sets={"networkPolicy.enabled": "true"})
        for doc in r.docs:
            labels = doc["metadata"]["labels"]
            for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
                assert labels.get(key), f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"
            assert labels["app.kubernetes.io/instance"] == "billing"


def test_selectors_never_carry_versions(helm):
    for values in (("task1.yaml",), ("task2.yaml",)):
        r = render(helm, values=values, sets={"networkPolicy.enabled": "true"})
        for kind in ("Deployment", "StatefulSet"):
            for obj in r.all(kind):
                selector = obj["spec"]["selector"]["matchLabels"]
                assert not set(selector) & set(SELECTOR_FORBIDDEN), (kind, selector)
                assert selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
        for svc in r.all("Service"):
            assert not set(svc["spec"]["selector"]) & set(SELECTOR_FORBIDDEN)


def test_secret_values_are_only_in_secrets(helm):
    r = render(helm, values=("task1.yaml",), sets={"postgresql.auth.password": "s3cr3t-Pa55"})
    for doc in r.docs:
        text = repr(doc)
        if doc["kind"] != "Secret":
            assert "s3cr3t-Pa55" not in text, f"password leaked into {doc['kind']}/{doc['metadata']['name']}"
    secret = r.get("Secret", "billing-postgresql")
    assert base64.b64decode(secret["data"]["password"]).decode() == "s3cr3t-Pa55"
