"""Task 2: billing as a StatefulSet with stable names and per-pod logs, and
the upgrade from task 1."""

from __future__ import annotations

import copy

from conftest import container, env_of, render

VERSIONED = ("helm.sh/chart", "app.kubernetes.io/version")


def task2(helm):
    return render(helm, values=("task2.yaml",))


def test_statefulset_with_headless_service(helm):
    r = task2(helm)
    sts = r.get("StatefulSet", "billing-stateful")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "billing-stateful"
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    # Logs outlive their pods, and the StatefulSet itself.
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    headless = r.get("Service", "billing-stateful")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= pod_labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert not r.has("Deployment", "billing")


def test_clusterip_service_stays_for_task1_clients(helm):
    r = task2(helm)
    svc = r.get("Service", "billing")
    assert svc["spec"]["type"] == "ClusterIP"
    assert "clusterIP" not in svc["spec"]
    pod_labels = r.get("StatefulSet", "billing-stateful")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    # ... and it can be switched off.
    assert not render(helm, values=("task2.yaml",), sets={"service.enabled": "false"}).has("Service", "billing")


def test_container_image_and_log_file(helm):
    sts = task2(helm).get("StatefulSet", "billing-stateful")
    pod = sts["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["billing"]
    c = container(pod, "billing")
    assert c["image"] == "billing:v2.0"
    env = env_of(c)
    assert env["LOG_FILE"]["value"] == "/var/log/app.log"
    assert env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "billing-postgresql", "key": "password"}
    assert c["volumeMounts"] == [{"name": "log", "mountPath": "/var/log"}]
    # The log volume comes from the claim template, not from a pod volume.
    assert not any(v["name"] == "log" for v in pod.get("volumes", []))
    # Writable by the non-root user: the kubelet gives the volume its group.
    assert pod["securityContext"]["fsGroup"] == 65532
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_volume_claim_templates(helm):
    sts = task2(helm).get("StatefulSet", "billing-stateful")
    (vct,) = sts["spec"]["volumeClaimTemplates"]
    assert vct["metadata"]["name"] == "log"
    assert vct["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert vct["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
    assert vct["spec"]["storageClassName"] == "billing-retain"
    labels = vct["metadata"]["labels"]
    assert not set(labels) & set(VERSIONED), labels
    assert labels == sts["spec"]["selector"]["matchLabels"]


def test_immutable_fields_do_not_depend_on_versions_or_extra_labels(helm):
    """An upgrade that changes a StatefulSet's selector or volumeClaimTemplates
    is refused by the API server; a new image tag, extra labels or pod
    labels must leave them exactly as they were."""
    base = task2(helm).get("StatefulSet", "billing-stateful")
    changed = render(
        helm,
        values=("task2.yaml",),
        sets={"image.tag": "v9.9", "commonLabels.team": "payments", "podLabels.canary": "yes"},
    ).get("StatefulSet", "billing-stateful")
    for field in ("selector", "volumeClaimTemplates", "serviceName", "podManagementPolicy"):
        assert changed["spec"][field] == base["spec"][field], field


def test_log_storage_settings(helm):
    sts = render(
        helm,
        values=("task2.yaml",),
        sets={
            "logs.persistence.size": "2Gi",
            "logs.persistence.storageClassName": "other",
            "logs.file": "/data/logs/tx.log",
        },
    ).get("StatefulSet", "billing-stateful")
    (vct,) = sts["spec"]["volumeClaimTemplates"]
    assert vct["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert vct["spec"]["storageClassName"] == "other"
    c = container(sts["spec"]["template"]["spec"], "billing")
    assert env_of(c)["LOG_FILE"]["value"] == "/data/logs/tx.log"
    assert c["volumeMounts"] == [{"name": "log", "mountPath": "/data/logs"}]


def test_logs_in_deployment_mode_use_an_emptydir(helm):
    dep = render(helm, values=("task1.yaml",), sets={"logs.enabled": "true"}).get("Deployment", "billing")
    pod = dep["spec"]["template"]["spec"]
    assert {"name": "log", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert env_of(container(pod, "billing"))["LOG_FILE"]["value"] == "/var/log/app.log"


def test_statefulset_without_logs_has_no_claims(helm):
    sts = render(helm, values=("task2.yaml",), sets={"logs.enabled": "false"}).get("StatefulSet", "billing-stateful")
    assert "volumeClaimTemplates" not in sts["spec"]
    assert "volumeMounts" not in container(sts["spec"]["template"]["spec"], "billing")


def _postgresql_objects(rendered):
    return {
        (d["kind"], d["metadata"]["name"]): d
        for d in rendered.docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "postgresql"
    }


def test_upgrade_task1_to_task2_leaves_postgresql_identical(helm):
    # A fixed password: otherwise each `helm template` draws a new random one
    # (a real upgrade reads the existing Secret back; see test_lookup.py).
    sets = {"postgresql.auth.password": "fixed-for-the-comparison", "postgresql.auth.superuser.password": "fixed-too"}
    before = render(helm, values=("task1.yaml",), sets=sets)
    after = render(helm, values=("task2.yaml",), sets=sets)
    pg_before = _postgresql_objects(before)
    pg_after = _postgresql_objects(after)
    assert set(pg_before) == {
        ("Secret", "billing-postgresql"),
        ("PersistentVolumeClaim", "billing-postgresql"),
        ("Service", "billing-postgresql"),
        ("Deployment", "billing-postgresql"),
        ("Secret", "billing-postgresql-superuser"),
        ("ConfigMap", "billing-postgresql-initdb"),
        ("Job", "billing-postgresql-roles"),
        ("NetworkPolicy", "billing-postgresql"),
    }
    assert pg_before == pg_after
    # The StorageClass and the ClusterIP Service's spec are unchanged too.
    assert before.get("StorageClass", "billing-retain") == after.get("StorageClass", "billing-retain")
    assert before.get("Service", "billing")["spec"] == after.get("Service", "billing")["spec"]


def test_upgrade_with_generated_password_changes_nothing_but_the_draw(helm):
    before = _postgresql_objects(render(helm, values=("task1.yaml",)))
    after = _postgresql_objects(render(helm, values=("task2.yaml",)))
    for key in before:
        a, b = copy.deepcopy(before[key]), copy.deepcopy(after[key])
        if key[0] == "Secret":
            a.pop("data"), b.pop("data")
        assert a == b, key
