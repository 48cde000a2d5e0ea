"""CloudNativePG mode (database.cnpg, issue 11 §3 and §5): the rendered
postgresql.cnpg.io/v1 Cluster, checked against the operator's own CRD schema;
billing pointed at the Cluster's read-write Service with verify-full and only
the certificate of the operator's CA Secret; the migration step, in which the
bundled PostgreSQL is kept, unchanged, as the import's source; and every
combination the chart refuses, with its message."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import CHART, container, env_of, render, render_error, run_helm
from fake_apiserver import FakeApiServer

CRD = ("--api-versions", "postgresql.cnpg.io/v1/Cluster")
HA = ("ha.yaml",)
# The migration step of docs/operations.md: task 1's release, the Cluster importing from its bundled PostgreSQL.
MIGRATION = {"database.cnpg.enabled": "true", "database.cnpg.import.enabled": "true"}
FIXED_PASSWORD = {"postgresql.auth.password": "same-for-both", "postgresql.auth.superuser.password": "also-the-same"}
EXTERNAL_IMPORT = {
    "postgresql.enabled": "false",
    "database.cnpg.enabled": "true",
    "database.cnpg.import.enabled": "true",
    "database.cnpg.import.source": "external",
    "database.cnpg.import.external.host": "old-db.example.com",
    "database.cnpg.import.external.port": "6432",
    "database.cnpg.import.external.database": "ledger",
    "database.cnpg.import.external.user": "dumper",
    "database.cnpg.import.external.sslmode": "require",
    "database.cnpg.import.external.passwordSecret.name": "old-db-creds",
    "database.cnpg.import.external.passwordSecret.key": "pw",
}
SCHEMA_FILE = Path(__file__).with_name("cnpg-cluster-v1.30.0.schema.json")
# Labels CloudNativePG 1.30 puts on an instance pod and on the import Job's pod
# (pkg/specs/pods.go, pkg/specs/jobs.go), for a Cluster named "billing-db".
CNPG_INSTANCE_POD = {
    "cnpg.io/cluster": "billing-db", "cnpg.io/instanceName": "billing-db-1", "cnpg.io/podRole": "instance",
    "app.kubernetes.io/name": "postgresql", "app.kubernetes.io/instance": "billing-db",
    "app.kubernetes.io/version": "18", "app.kubernetes.io/component": "database",
    "app.kubernetes.io/managed-by": "cloudnative-pg",
}
CNPG_IMPORT_POD = {**{k: v for k, v in CNPG_INSTANCE_POD.items() if k != "cnpg.io/podRole"}, "cnpg.io/jobRole": "import"}


def cnpg(helm, *args, values=(), sets=None):
    return render(helm, *CRD, *args, values=values, sets=sets)


def sets_args(sets: dict) -> list[str]:
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def billing_pod(r, kind="Deployment"):
    name = "billing" if kind == "Deployment" else "billing-stateful"
    return r.get(kind, name)["spec"]["template"]["spec"]


def strict(node):
    """The CRD's schema with unknown fields refused: the API server would
    prune a misspelt field silently, so the test must catch it instead."""
    if isinstance(node, dict):
        node = {k: strict(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


CLUSTER_SCHEMA = strict(json.loads(SCHEMA_FILE.read_text()))


def test_the_cluster_of_values_ha(helm):
    r = cnpg(helm, values=HA)
    cluster = r.get("Cluster", "billing-db")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["metadata"]["namespace"] == "default"
    labels = cluster["metadata"]["labels"]
    assert {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                                   "app.kubernetes.io/part-of", "app.kubernetes.io/component")} == {
        "app.kubernetes.io/name": "billing", "app.kubernetes.io/instance": "billing",
        "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "billing",
        "app.kubernetes.io/component": "database",
    }
    assert "app.kubernetes.io/version" not in labels
    assert cluster["spec"] == {
        "instances": 3,
        "imagePullPolicy": "IfNotPresent",
        "enableSuperuserAccess": False,
        "smartShutdownTimeout": 5,
        "storage": {"size": "1Gi", "storageClass": "billing-retain"},
        "postgresql": {"synchronous": {"method": "any", "number": 1, "dataDurability": "required"}},
        "bootstrap": {"initdb": {"database": "billing", "owner": "billing"}},
    }
    # The operator makes the instances' volumes of the chart's StorageClass, so the chart makes that class.
    assert r.get("StorageClass", "billing-retain")["reclaimPolicy"] == "Retain"


def test_every_cluster_setting_reaches_the_cluster(helm):
    r = cnpg(helm, values=HA, sets={
        "database.cnpg.clusterName": "ledger", "database.cnpg.instances": "5",
        "database.cnpg.imageName": "ghcr.io/cloudnative-pg/postgresql:17.6", "database.cnpg.imagePullPolicy": "Always",
        "database.cnpg.storage.size": "20Gi", "database.cnpg.storage.storageClass": "fast",
        "database.cnpg.synchronous.number": "2", "database.cnpg.synchronous.dataDurability": "preferred",
        "database.cnpg.database": "payments", "database.cnpg.owner": "payer",
        "database.cnpg.parameters.max_connections": "300", "database.cnpg.parameters.work_mem": "8MB",
        "database.cnpg.resources.requests.cpu": "500m", "database.cnpg.resources.limits.memory": "1Gi",
        "database.cnpg.smartShutdownTimeout": "30",
    })
    spec = r.get("Cluster", "ledger")["spec"]
    assert spec["instances"] == 5
    assert spec["smartShutdownTimeout"] == 30
    assert (spec["imageName"], spec["imagePullPolicy"]) == ("ghcr.io/cloudnative-pg/postgresql:17.6", "Always")
    assert spec["storage"] == {"size": "20Gi", "storageClass": "fast"}
    assert spec["postgresql"] == {
        "synchronous": {"method": "any", "number": 2, "dataDurability": "preferred"},
        # Strings, as CloudNativePG's CRD wants, though --set made a number.
        "parameters": {"max_connections": "300", "work_mem": "8MB"},
    }
    assert spec["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}
    assert spec["bootstrap"] == {"initdb": {"database": "payments", "owner": "payer"}}
    env = env_of(container(billing_pod(r), "billing"))
    assert env["DATABASE_URL"]["value"] == "postgres://payer@ledger-rw:5432/payments?sslmode=verify-full"
    assert env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "ledger-app", "key": "password"}
    # Nothing uses the chart's StorageClass any more, so it is not made.
    assert not r.all("StorageClass")


def test_storage_class_follows_the_charts(helm):
    spec = cnpg(helm, values=HA, sets={"storageClass.name": "shared-retain"}).get("Cluster", "billing-db")["spec"]
    assert spec["storage"]["storageClass"] == "shared-retain"
    r = cnpg(helm, values=HA, sets={"storageClass.create": "false"})
    assert "storageClass" not in r.get("Cluster", "billing-db")["spec"]["storage"], "the cluster's default class"
    assert not r.all("StorageClass")


RENDERINGS = {
    "ha": {"values": HA},
    "ha-everything-set": {"values": HA, "sets": {
        "database.cnpg.imageName": "ghcr.io/cloudnative-pg/postgresql:18.4-system-trixie",
        "database.cnpg.parameters.max_connections": "200", "database.cnpg.resources.requests.memory": "512Mi",
        "database.cnpg.resources.limits.cpu": "2", "database.cnpg.synchronous.dataDurability": "preferred"}},
    "migration": {"values": ("task1.yaml",), "sets": MIGRATION},
    "external-import": {"values": HA, "sets": EXTERNAL_IMPORT},
}


@pytest.mark.parametrize("case", sorted(RENDERINGS))
def test_the_cluster_is_valid_for_cloudnative_pg_1_30(helm, case):
    """Against the Cluster CRD's openAPIV3Schema of the 1.30.0 release manifest, unknown fields refused."""
    spec = RENDERINGS[case]
    cluster = cnpg(helm, values=spec["values"], sets=spec.get("sets")).get("Cluster", "billing-db")
    jsonschema.validate(cluster, CLUSTER_SCHEMA)


def test_the_schema_check_catches_a_misspelt_field():
    cluster = cnpg("helm3", values=HA).get("Cluster", "billing-db")
    bad = json.loads(json.dumps(cluster))
    bad["spec"]["postgresql"]["synchronous"]["durability"] = "required"
    with pytest.raises(jsonschema.ValidationError, match="durability"):
        jsonschema.validate(bad, CLUSTER_SCHEMA)
    bad = json.loads(json.dumps(cluster))
    bad["spec"]["postgresql"]["synchronous"]["method"] = "all"
    with pytest.raises(jsonschema.ValidationError, match="'all' is not one of"):
        jsonschema.validate(bad, CLUSTER_SCHEMA)


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_billing_uses_the_cluster_with_verify_full_and_only_the_ca_certificate(helm, kind):
    values = HA if kind == "Deployment" else ("task2.yaml",)
    sets = {} if kind == "Deployment" else {"postgresql.enabled": "false", "database.cnpg.enabled": "true"}
    pod = billing_pod(cnpg(helm, values=values, sets=sets), kind)
    c = container(pod, "billing")
    env = env_of(c)
    # The operator's server certificate names the short Service billing-db-rw among its SANs.
    assert env["DATABASE_URL"]["value"] == "postgres://billing@billing-db-rw:5432/billing?sslmode=verify-full"
    assert env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "billing-db-app", "key": "password"}
    assert env["PGSSLROOTCERT"]["value"] == "/etc/billing/database-ca/ca.crt"
    assert {"name": "database-ca", "mountPath": "/etc/billing/database-ca", "readOnly": True} in c["volumeMounts"]
    (ca,) = [v for v in pod["volumes"] if v["name"] == "database-ca"]
    # billing-db-ca also holds ca.key, the CA's private key: only ca.crt is projected.
    assert ca == {"name": "database-ca", "secret": {"secretName": "billing-db-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
    if kind == "StatefulSet":
        assert [m["name"] for m in c["volumeMounts"]] == ["log", "database-ca"]


def test_no_bundled_postgresql_objects_without_postgresql_enabled(helm):
    r = cnpg(helm, values=HA, sets={"networkPolicy.enabled": "true", "externalDatabase.password": "unused"})
    assert not [d for d in r.docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "postgresql"]
    assert not [d for d in r.docs if "postgresql" in d["metadata"]["name"]], r.names()
    assert not r.all("NetworkPolicy") and not r.all("Job") and not r.all("PersistentVolumeClaim")
    assert not r.all("Secret"), "the operator makes billing-db-app; externalDatabase.password is not billing's"
    assert sorted(r.names()) == sorted([
        "Cluster/billing-db", "Deployment/billing", "Pod/billing-test-api", "PodDisruptionBudget/billing",
        "Service/billing", "StorageClass/billing-retain",
    ])
    assert [c["name"] for c in r.get("Pod", "billing-test-api")["spec"]["containers"]] == ["api", "ledger"]


@pytest.mark.parametrize("mode", ["ha", "migration"])
def test_helm_test_writes_to_the_clusters_ledger_over_verify_full(helm, mode):
    if mode == "ha":
        r = cnpg(helm, values=HA)
    else:
        r = cnpg(helm, values=("task1.yaml",), sets={**FIXED_PASSWORD, **MIGRATION})
    pod = r.get("Pod", "billing-test-api")["spec"]
    ledger = container(pod, "ledger")
    # The instances' image has psql; with imageName empty it is the operator's default, which the chart names.
    assert ledger["image"] == "ghcr.io/cloudnative-pg/postgresql:18.4-system-trixie"
    env = env_of(ledger)
    assert {k: env[k].get("value") for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE", "PGSSLROOTCERT")} == {
        "PGHOST": "billing-db-rw", "PGPORT": "5432", "PGUSER": "billing", "PGDATABASE": "billing",
        "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/etc/billing/database-ca/ca.crt",
    }
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "billing-db-app", "key": "password"}
    assert ledger["volumeMounts"] == [{"name": "database-ca", "mountPath": "/etc/billing/database-ca", "readOnly": True}]
    ca = [v for v in pod["volumes"] if v["name"] == "database-ca"]
    assert ca == [{"name": "database-ca",
                   "secret": {"secretName": "billing-db-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]
    assert "ROLLBACK;" in ledger["args"][0]


def test_helm_test_uses_the_clusters_image_when_it_is_set(helm):
    r = cnpg(helm, values=HA, sets={"database.cnpg.imageName": "registry.example/postgresql:17.6"})
    assert container(r.get("Pod", "billing-test-api")["spec"], "ledger")["image"] == "registry.example/postgresql:17.6"


BUNDLED = ["Deployment/billing-postgresql", "PersistentVolumeClaim/billing-postgresql", "Service/billing-postgresql",
           "Secret/billing-postgresql", "Secret/billing-postgresql-superuser", "Job/billing-postgresql-roles",
           "ConfigMap/billing-postgresql-initdb", "StorageClass/billing-retain"]


def test_migration_keeps_the_bundled_postgresql_as_it_was_and_imports_from_it(helm):
    before = render(helm, values=("task1.yaml",), sets=FIXED_PASSWORD)
    during = cnpg(helm, values=("task1.yaml",), sets={**FIXED_PASSWORD, **MIGRATION})
    for name in BUNDLED:
        kind, obj = name.split("/")
        assert during.get(kind, obj) == before.get(kind, obj), name
    assert set(during.names()) == set(before.names()) | {"Cluster/billing-db"}
    # Only billing moves to the Cluster.
    env = env_of(container(billing_pod(during), "billing"))
    assert env["DATABASE_URL"]["value"] == "postgres://billing@billing-db-rw:5432/billing?sslmode=verify-full"
    spec = during.get("Cluster", "billing-db")["spec"]
    assert spec["bootstrap"]["initdb"] == {
        "database": "billing", "owner": "billing",
        "import": {"type": "microservice", "databases": ["billing"], "source": {"externalCluster": "import-source"}},
    }
    # The bundled server has no TLS; billing's role owns the ledger, so it may pg_dump it.
    assert spec["externalClusters"] == [{
        "name": "import-source",
        "connectionParameters": {"host": "billing-postgresql", "port": "5432", "user": "billing", "dbname": "billing",
                                 "sslmode": "disable"},
        "password": {"name": "billing-postgresql", "key": "password"},
    }]


def test_migration_reads_the_bundled_password_where_billing_did(helm):
    r = cnpg(helm, values=("task1.yaml",), sets={
        **MIGRATION, "postgresql.auth.existingSecret": "pg-creds", "postgresql.auth.existingSecretPasswordKey": "pgpass",
        "postgresql.auth.username": "payer", "postgresql.auth.database": "ledger", "postgresql.service.port": "6543"})
    (source,) = r.get("Cluster", "billing-db")["spec"]["externalClusters"]
    assert source["password"] == {"name": "pg-creds", "key": "pgpass"}
    assert source["connectionParameters"] == {"host": "billing-postgresql", "port": "6543", "user": "payer",
                                              "dbname": "ledger", "sslmode": "disable"}
    assert r.get("Cluster", "billing-db")["spec"]["bootstrap"]["initdb"]["import"]["databases"] == ["ledger"]
    # The bundled server's role-setup Job still sets billing's password from the bundled Secret.
    job = r.get("Job", "billing-postgresql-roles")["spec"]["template"]["spec"]
    assert any(v.get("secret", {}).get("secretName") == "pg-creds" for v in job["volumes"])


def test_import_from_an_external_server(helm):
    spec = cnpg(helm, values=HA, sets=EXTERNAL_IMPORT).get("Cluster", "billing-db")["spec"]
    assert spec["bootstrap"]["initdb"]["import"]["databases"] == ["ledger"]
    assert spec["externalClusters"] == [{
        "name": "import-source",
        "connectionParameters": {"host": "old-db.example.com", "port": "6432", "user": "dumper", "dbname": "ledger",
                                 "sslmode": "require"},
        "password": {"name": "old-db-creds", "key": "pw"},
    }]
    no_sslmode = {**EXTERNAL_IMPORT, "database.cnpg.import.external.sslmode": ""}
    (source,) = cnpg(helm, values=HA, sets=no_sslmode).get("Cluster", "billing-db")["spec"]["externalClusters"]
    assert "sslmode" not in source["connectionParameters"], "libpq's default"


def matches(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def test_network_policy_never_selects_the_clusters_pods(helm):
    """The operator must reach every instance's status port; the chart's NetworkPolicy is the bundled
    PostgreSQL's. While the Cluster imports, the policy admits the import Job to the bundled server."""
    r = cnpg(helm, values=("task1.yaml",), sets=MIGRATION)
    (np,) = r.all("NetworkPolicy")
    pg_pod = r.get("Deployment", "billing-postgresql")["spec"]["template"]["metadata"]["labels"]
    assert matches(np["spec"]["podSelector"]["matchLabels"], pg_pod)
    (rule,) = np["spec"]["ingress"]
    *_, importer = rule["from"]
    assert importer == {"podSelector": {"matchLabels": {"cnpg.io/cluster": "billing-db", "cnpg.io/jobRole": "import"}}}
    assert matches(importer["podSelector"]["matchLabels"], CNPG_IMPORT_POD)
    assert not matches(importer["podSelector"]["matchLabels"], CNPG_INSTANCE_POD)
    # Not even when the Cluster is named like the release, which CloudNativePG puts in app.kubernetes.io/instance.
    for cluster_name in ("billing-db", "billing"):
        pod = {**CNPG_INSTANCE_POD, "cnpg.io/cluster": cluster_name, "app.kubernetes.io/instance": cluster_name}
        assert not matches(np["spec"]["podSelector"]["matchLabels"], pod)
    # Without the import, the bundled server admits what it always did.
    assert len(render(helm, values=("task1.yaml",)).all("NetworkPolicy")[0]["spec"]["ingress"][0]["from"]) == 2


def test_crd_missing_is_one_line_naming_the_install_command(helm):
    for sets in ({"postgresql.enabled": "false", "database.cnpg.enabled": "true"}, MIGRATION):
        err = render_error(helm, *sets_args(sets))
        (line,) = [ln for ln in err.splitlines() if "CloudNativePG" in ln]
        assert line.startswith("Error: execution error at (billing/templates/cnpg-cluster.yaml"), err
        assert ("database.cnpg.enabled is true but the CloudNativePG operator is not installed (no postgresql.cnpg.io/v1 "
                "Cluster in the API); the chart does not install it: kubectl apply --server-side -f "
                "https://raw.githubusercontent.com/cloudnative-pg/cloudnative-pg/release-1.30/releases/cnpg-1.30.0.yaml "
                "(see docs/operations.md, CloudNativePG)") in line
    # Off by default: without the CRD everything else renders as before.
    assert not render(helm).all("Cluster")


ON = {"postgresql.enabled": "false", "database.cnpg.enabled": "true"}
# (id, --set values, message). Template refusals: each names the values to change.
REFUSALS = [
    ("external-url", {**ON, "externalDatabase.url": "postgres://billing@db/billing"},
     "database.cnpg.enabled is true and externalDatabase.url or externalDatabase.host is set: billing uses one database."),
    ("external-host", {**ON, "externalDatabase.host": "db.example.com"},
     "Clear externalDatabase.url and externalDatabase.host, or set database.cnpg.enabled=false."),
    ("bundled-still-on", {"database.cnpg.enabled": "true"},
     "database.cnpg.enabled and postgresql.enabled are both true"),
    ("bundled-still-on-external-import", {**EXTERNAL_IMPORT, "postgresql.enabled": "true"},
     "Set postgresql.enabled=false, or import from it with database.cnpg.import.enabled=true and "
     "database.cnpg.import.source=bundled (the migration step, see docs/operations.md)."),
    ("import-bundled-without-bundled", {**ON, "database.cnpg.import.enabled": "true"},
     "database.cnpg.import.enabled is true with database.cnpg.import.source=bundled, but postgresql.enabled is false: "
     "there is no bundled PostgreSQL to import from."),
    ("import-external-without-host", {**EXTERNAL_IMPORT, "database.cnpg.import.external.host": ""},
     "database.cnpg.import.source is external, so database.cnpg.import.external.host is required"),
    ("import-external-without-password", {**EXTERNAL_IMPORT, "database.cnpg.import.external.passwordSecret.name": ""},
     "database.cnpg.import.source is external, so database.cnpg.import.external.passwordSecret.name is required"),
    ("sync-number-equals-instances", {**ON, "database.cnpg.instances": "2", "database.cnpg.synchronous.number": "2"},
     "database.cnpg.synchronous.number is 2 with database.cnpg.instances 2: it must be at least 1"),
    ("sync-number-over-instances", {**ON, "database.cnpg.synchronous.number": "4"},
     "Set database.cnpg.synchronous.number between 1 and 2, or raise database.cnpg.instances."),
    ("parameters-max-connections-a-word", {**ON, "database.cnpg.parameters.max_connections": "many"},
     'database.cnpg.parameters.max_connections is "many": give a whole number of connections'),
]


@pytest.mark.parametrize(("sets", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_combinations_that_cannot_work_are_refused(helm, sets, message):
    err = render_error(helm, *CRD, *sets_args(sets))
    assert message in err, err


# What the schema refuses first (Helm validates values before rendering); the
# templates refuse the same again, for --skip-schema-validation.
SCHEMA_REFUSALS = [
    ("one-instance", {**ON, "database.cnpg.instances": "1"},
     "database.cnpg.instances: Must be greater than or equal to 2",
     "at '/database/cnpg/instances': minimum: got 1, want 2",
     "database.cnpg.instances is 1: CloudNativePG mode is for high availability, and one instance survives no pod, "
     "node or disk loss that the bundled PostgreSQL does not."),
    ("no-synchronous-standby", {**ON, "database.cnpg.synchronous.number": "0"},
     "database.cnpg.synchronous.number: Must be greater than or equal to 1",
     "at '/database/cnpg/synchronous/number': minimum: got 0, want 1",
     "database.cnpg.synchronous.number is 0 with database.cnpg.instances 3: it must be at least 1, so that every "
     "acknowledged commit is on two servers or more"),
    ("unknown-data-durability", {**ON, "database.cnpg.synchronous.dataDurability": "strict"},
     'database.cnpg.synchronous.dataDurability must be one of the following: "required", "preferred"',
     "at '/database/cnpg/synchronous/dataDurability': value must be one of 'required', 'preferred'", None),
    ("unknown-import-source", {**ON, "database.cnpg.import.source": "flask"},
     'database.cnpg.import.source must be one of the following: "bundled", "external"',
     "at '/database/cnpg/import/source': value must be one of 'bundled', 'external'", None),
    ("cluster-name-with-a-dot", {**ON, "database.cnpg.clusterName": "billing.db"},
     "database.cnpg.clusterName: Does not match pattern",
     "at '/database/cnpg/clusterName': 'billing.db' does not match pattern", None),
    ("cluster-name-too-long", {**ON, "database.cnpg.clusterName": "a" * 51},
     "database.cnpg.clusterName: String length must be less than or equal to 50",
     "at '/database/cnpg/clusterName': maxLength: got 51, want 50", None),
    ("unknown-cnpg-key", {**ON, "database.cnpg.replicas": "3"},
     "database.cnpg: Additional property replicas is not allowed",
     "at '/database/cnpg': additional properties 'replicas' not allowed", None),
]


@pytest.mark.parametrize(("sets", "helm3_says", "helm4_says", "template_says"), [r[1:] for r in SCHEMA_REFUSALS],
                         ids=[r[0] for r in SCHEMA_REFUSALS])
def test_bad_cnpg_values_are_refused_by_the_schema(helm, sets, helm3_says, helm4_says, template_says):
    err = render_error(helm, *CRD, *sets_args(sets))
    assert "values don't meet the specifications of the schema" in err
    assert (helm3_says if helm == "helm3" else helm4_says) in err, err
    if template_says:
        err = render_error(helm, *CRD, "--skip-schema-validation", *sets_args(sets))
        assert template_says in err, err


def test_connection_budget_counts_against_the_clusters_max_connections(helm):
    # CloudNativePG's default max_connections is PostgreSQL's 100: the same 90 for billing as the bundled server.
    err = render_error(helm, *CRD, "-f", str(CHART.parents[1] / "values" / "task2.yaml"), *sets_args(
        {**ON, "workload.replicas": "5"}))
    assert ("5 pods at once (workload.replicas 5 + 0 surge pods of a rolling update) x (config.databasePoolSize 20 + "
            "config.databaseReadConnections 1) = 105 connections to the CloudNativePG cluster billing-db, which serves "
            "billing at most 90 (database.cnpg.parameters.max_connections 100, less 3 reserved for superusers and 7 "
            "for helm test, migrations and psql).") in err, err
    assert "or raise database.cnpg.parameters.max_connections, so that pods x (pool + read connections) <= 90" in err
    # Raised, it admits more pods; the superuser reserve follows the parameters too.
    r = cnpg(helm, values=("task2.yaml",), sets={**ON, "workload.replicas": "5",
                                                 "database.cnpg.parameters.max_connections": "115"})
    assert r.get("StatefulSet", "billing-stateful")["spec"]["replicas"] == 5
    err = render_error(helm, *CRD, "-f", str(CHART.parents[1] / "values" / "task2.yaml"), *sets_args(
        {**ON, "workload.replicas": "5", "database.cnpg.parameters.max_connections": "115",
         "database.cnpg.parameters.superuser_reserved_connections": "4"}))
    assert "which serves billing at most 104 (database.cnpg.parameters.max_connections 115, less 4 reserved" in err
    # In the migration step the budget is the Cluster's, which billing now uses.
    err = render_error(helm, *CRD, *sets_args({**MIGRATION, "workload.replicas": "4", "config.databasePoolSize": "17",
                                               "database.cnpg.parameters.max_connections": "80"}))
    assert "= 90 connections to the CloudNativePG cluster billing-db, which serves billing at most 70" in err


def test_helm3_and_helm4_render_the_same_cluster_mode():
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    for spec in RENDERINGS.values():
        sets = {**FIXED_PASSWORD, **spec.get("sets", {})}
        helm3 = cnpg("helm3", values=spec["values"], sets=sets)
        helm4 = cnpg("helm4", values=spec["values"], sets=sets)
        assert sorted(helm3.docs, key=key) == sorted(helm4.docs, key=key)


def test_values_ha_is_task1_with_the_cluster():
    ha = yaml.safe_load((CHART.parents[1] / "values" / "ha.yaml").read_text())
    task1 = yaml.safe_load((CHART.parents[1] / "values" / "task1.yaml").read_text())
    assert {k: ha[k] for k in task1} == task1
    assert ha["postgresql"] == {"enabled": False}
    assert ha["database"] == {"cnpg": {"enabled": True, "instances": 3}}


@pytest.fixture
def cluster(tmp_path):
    with FakeApiServer() as api:
        api.kubeconfig_path = str(api.kubeconfig(tmp_path))
        yield api


def install_notes(helm, cluster, sets):
    """NOTES.txt of `helm install --dry-run=server` against the fake API server, which serves the Cluster CRD
    (a client-side dry run cannot be told about it)."""
    proc = run_helm(helm, "install", "billing", str(CHART), "--namespace", "default", "--dry-run=server",
                    "--disable-openapi-validation", "-f", str(CHART.parents[1] / "values" / "task1.yaml"),
                    *sets_args(sets), kubeconfig=cluster.kubeconfig_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("NOTES:", 1)[1]


def test_notes_of_the_cluster_mode(helm, cluster):
    text = install_notes(helm, cluster, {**ON, "database.cnpg.instances": "3"})
    assert "Database: the CloudNativePG cluster billing-db, 3 instances; each commit waits for 1 standby (dataDurability required)." in text
    assert "billing connects to billing-db-rw (always the current primary) as role billing, database billing, with sslmode=verify-full" in text
    assert "kubectl -n default get cluster billing-db -w" in text
    assert "Migration" not in text and "billing-postgresql" not in text


def test_notes_of_the_migration_say_what_comes_next(helm, cluster):
    text = install_notes(helm, cluster, MIGRATION)
    assert "PostgreSQL (bundled, kept only as the CloudNativePG import's source): billing-postgresql" in text
    assert "Migration: the cluster imports database billing from the bundled PostgreSQL once" in text
    assert "1. wait for \"Cluster in healthy state\" in `kubectl -n default get cluster billing-db`" in text
    assert ("kubectl -n default exec deploy/billing-postgresql -c postgresql -- psql -U postgres -d billing -tAc "
            "'SELECT count(*) FROM transactions'") in text
    assert "kubectl -n default exec billing-db-1 -c postgres -- psql -d billing -tAc 'SELECT count(*) FROM transactions'" in text
    assert "helm upgrade again with postgresql.enabled=false and\n     without the database.cnpg.import values" in text
    # The claim is kept by its keep annotation; Retain is the StorageClass's, for when it is deleted later.
    assert "leaves the bundled data's claim billing-postgresql and its password Secret in place\n(helm.sh/resource-policy: keep)" in text
    assert "StorageClass billing-retain has reclaimPolicy Retain" in text
    text = install_notes(helm, cluster, {**MIGRATION, "postgresql.persistence.keep": "false"})
    assert "helm.sh/resource-policy: keep" not in text
    assert ("That upgrade deletes the bundled data's claim billing-postgresql (postgresql.persistence.keep is false); its "
            "volume\nstays, Released, only if StorageClass billing-retain has reclaimPolicy Retain.") in text


def test_after_the_migration_the_release_is_values_ha(helm):
    """Step 4 of the migration (task 1, the Cluster, no bundled PostgreSQL, no import) renders what values/ha.yaml
    does, so later upgrades may use either; its Cluster differs from the migration step's only by the import."""
    after = cnpg(helm, values=("task1.yaml",), sets={"database.cnpg.enabled": "true", "postgresql.enabled": "false"})
    ha = cnpg(helm, values=HA)
    assert after.docs == ha.docs
    during = cnpg(helm, values=("task1.yaml",), sets=MIGRATION).get("Cluster", "billing-db")
    spec = json.loads(json.dumps(during["spec"]))
    del spec["externalClusters"], spec["bootstrap"]["initdb"]["import"]
    assert spec == ha.get("Cluster", "billing-db")["spec"]
