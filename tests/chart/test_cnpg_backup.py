"""CloudNativePG mode's backups and point-in-time recovery (issue 23 §2):
database.cnpg.backup renders WAL archiving and a ScheduledBackup, through the
Barman Cloud plugin (an ObjectStore and the Cluster's spec.plugins) or the
in-tree barmanObjectStore; database.cnpg.recovery renders a Cluster that
bootstraps from the object store, to its end or to a targetTime. Every object
is checked against the CRD schemas of CloudNativePG 1.30.0 and of the plugin
(extract_cnpg_schema.py), unknown fields refused; every incomplete or
contradictory setting is refused with a message naming the value to set."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from conftest import render_error
from test_cnpg import CLUSTER_SCHEMA, HA, cnpg, sets_args, strict

HERE = Path(__file__).parent
SCHEDULED_BACKUP_SCHEMA = strict(json.loads((HERE / "cnpg-scheduledbackup-v1.30.0.schema.json").read_text()))
OBJECT_STORE_SCHEMA = strict(json.loads((HERE / "barmancloud-objectstore-v0.14.0.schema.json").read_text()))
PLUGIN_CRD = ("--api-versions", "barmancloud.cnpg.io/v1/ObjectStore")
LABELS = {
    "app.kubernetes.io/name": "billing", "app.kubernetes.io/instance": "billing",
    "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "billing",
    "app.kubernetes.io/component": "database",
}
BACKUP = {
    "database.cnpg.backup.enabled": "true",
    "database.cnpg.backup.destinationPath": "s3://billing-backups/ha",
    "database.cnpg.backup.endpointURL": "https://s3.backup.svc:7070",
    "database.cnpg.backup.s3Credentials.accessKeyId.name": "s3-creds",
    "database.cnpg.backup.s3Credentials.secretAccessKey.name": "s3-creds",
}
IN_TREE = {**BACKUP, "database.cnpg.backup.method": "barmanObjectStore"}
# The release that recovers billing-db's backups: a new Cluster archiving to a folder of its own.
RECOVERY = {
    **BACKUP,
    "database.cnpg.backup.serverName": "billing-db-2",
    "database.cnpg.recovery.enabled": "true",
    "database.cnpg.recovery.serverName": "billing-db",
}
STORE = {
    "destinationPath": "s3://billing-backups/ha",
    "endpointURL": "https://s3.backup.svc:7070",
    "s3Credentials": {
        "accessKeyId": {"name": "s3-creds", "key": "ACCESS_KEY_ID"},
        "secretAccessKey": {"name": "s3-creds", "key": "ACCESS_SECRET_KEY"},
    },
}
COMPRESSED = {"wal": {"compression": "gzip"}, "data": {"compression": "gzip"}}


def labelled(obj):
    assert {k: obj["metadata"]["labels"][k] for k in LABELS} == LABELS
    assert obj["metadata"]["namespace"] == "default"
    return obj


def test_no_backup_objects_by_default(helm):
    r = cnpg(helm, values=HA)
    assert not r.all("ObjectStore") and not r.all("ScheduledBackup")
    spec = r.get("Cluster", "billing-db")["spec"]
    assert "plugins" not in spec and "backup" not in spec and "externalClusters" not in spec
    assert spec["bootstrap"] == {"initdb": {"database": "billing", "owner": "billing"}}


def test_backup_through_the_barman_cloud_plugin(helm):
    r = cnpg(helm, *PLUGIN_CRD, values=HA, sets=BACKUP)
    spec = r.get("Cluster", "billing-db")["spec"]
    assert spec["plugins"] == [{
        "name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": True,
        "parameters": {"barmanObjectName": "billing-db-backup", "serverName": "billing-db"},
    }]
    assert "backup" not in spec, "not both ways at once"
    assert spec["bootstrap"] == {"initdb": {"database": "billing", "owner": "billing"}}
    store = labelled(r.get("ObjectStore", "billing-db-backup"))
    assert store["apiVersion"] == "barmancloud.cnpg.io/v1"
    assert store["spec"] == {"retentionPolicy": "30d", "configuration": {**STORE, **COMPRESSED}}
    scheduled = labelled(r.get("ScheduledBackup", "billing-db-backup"))
    assert scheduled["apiVersion"] == "postgresql.cnpg.io/v1"
    assert scheduled["spec"] == {
        "cluster": {"name": "billing-db"}, "schedule": "0 0 0 * * *", "immediate": True,
        "backupOwnerReference": "self", "method": "plugin",
        "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"},
    }


def test_backup_in_tree(helm):
    r = cnpg(helm, values=HA, sets=IN_TREE)
    spec = r.get("Cluster", "billing-db")["spec"]
    assert spec["backup"] == {
        "retentionPolicy": "30d",
        "barmanObjectStore": {**STORE, "serverName": "billing-db", **COMPRESSED},
    }
    assert "plugins" not in spec
    assert not r.all("ObjectStore"), "the in-tree way needs no plugin"
    scheduled = r.get("ScheduledBackup", "billing-db-backup")["spec"]
    assert scheduled["method"] == "barmanObjectStore"
    assert "pluginConfiguration" not in scheduled


def test_every_backup_setting_reaches_its_field(helm):
    sets = {
        **IN_TREE, "database.cnpg.clusterName": "ledger", "database.cnpg.backup.serverName": "ledger-eu",
        "database.cnpg.backup.endpointCA.name": "s3-ca", "database.cnpg.backup.endpointCA.key": "ca.pem",
        "database.cnpg.backup.s3Credentials.accessKeyId.key": "id",
        "database.cnpg.backup.s3Credentials.secretAccessKey.name": "s3-secret",
        "database.cnpg.backup.s3Credentials.secretAccessKey.key": "secret",
        "database.cnpg.backup.wal.compression": "zstd", "database.cnpg.backup.wal.maxParallel": "4",
        "database.cnpg.backup.data.compression": "",
        "database.cnpg.backup.data.immediateCheckpoint": "true",
        "database.cnpg.backup.retentionPolicy": "", "database.cnpg.backup.schedule": "@every 6h",
        "database.cnpg.backup.immediate": "false",
    }
    r = cnpg(helm, values=HA, sets=sets)
    assert r.get("Cluster", "ledger")["spec"]["backup"] == {"barmanObjectStore": {
        "destinationPath": "s3://billing-backups/ha", "endpointURL": "https://s3.backup.svc:7070",
        "serverName": "ledger-eu", "endpointCA": {"name": "s3-ca", "key": "ca.pem"},
        "s3Credentials": {"accessKeyId": {"name": "s3-creds", "key": "id"},
                          "secretAccessKey": {"name": "s3-secret", "key": "secret"}},
        "wal": {"compression": "zstd", "maxParallel": 4}, "data": {"immediateCheckpoint": True},
    }}, "empty compression and retentionPolicy are left to CloudNativePG (none, keep all)"
    scheduled = r.get("ScheduledBackup", "ledger-backup")["spec"]
    assert (scheduled["cluster"], scheduled["schedule"], scheduled["immediate"]) == ({"name": "ledger"}, "@every 6h", False)
    plugin = cnpg(helm, *PLUGIN_CRD, values=HA, sets={**sets, "database.cnpg.backup.method": "plugin"})
    assert plugin.get("Cluster", "ledger")["spec"]["plugins"][0]["parameters"] == {
        "barmanObjectName": "ledger-backup", "serverName": "ledger-eu"}
    assert "serverName" not in plugin.get("ObjectStore", "ledger-backup")["spec"]["configuration"], \
        "the plugin takes it from the Cluster's parameters"


def test_recovery_to_the_end_of_the_archive_through_the_plugin(helm):
    r = cnpg(helm, *PLUGIN_CRD, values=HA, sets=RECOVERY)
    spec = r.get("Cluster", "billing-db")["spec"]
    assert spec["bootstrap"] == {"recovery": {"source": "recovery-source", "database": "billing", "owner": "billing"}}
    assert spec["externalClusters"] == [{"name": "recovery-source", "plugin": {
        "name": "barman-cloud.cloudnative-pg.io",
        "parameters": {"barmanObjectName": "billing-db-recovery", "serverName": "billing-db"},
    }}]
    # It reads backup's object store, without writing to it (no compression, no retention).
    assert labelled(r.get("ObjectStore", "billing-db-recovery"))["spec"] == {"configuration": STORE}
    # And archives itself, to a folder of its own.
    assert spec["plugins"][0]["parameters"] == {"barmanObjectName": "billing-db-backup", "serverName": "billing-db-2"}


def test_recovery_to_a_time_in_tree_from_another_store_without_backups(helm):
    r = cnpg(helm, values=HA, sets={
        "database.cnpg.backup.method": "barmanObjectStore",
        "database.cnpg.recovery.enabled": "true", "database.cnpg.recovery.serverName": "billing-db",
        "database.cnpg.recovery.destinationPath": "s3://old-backups",
        "database.cnpg.recovery.endpointURL": "http://minio.old:9000",
        "database.cnpg.recovery.endpointCA.name": "old-ca",
        "database.cnpg.recovery.s3Credentials.accessKeyId.name": "old-creds",
        "database.cnpg.recovery.s3Credentials.secretAccessKey.name": "old-creds",
        "database.cnpg.recovery.recoveryTarget.targetTime": "2026-12-06 14:04:59+01:00",
    })
    spec = r.get("Cluster", "billing-db")["spec"]
    assert spec["bootstrap"] == {"recovery": {
        "source": "recovery-source", "database": "billing", "owner": "billing",
        "recoveryTarget": {"targetTime": "2026-12-06 14:04:59+01:00"},
    }}
    assert spec["externalClusters"] == [{"name": "recovery-source", "barmanObjectStore": {
        "destinationPath": "s3://old-backups", "endpointURL": "http://minio.old:9000", "serverName": "billing-db",
        "endpointCA": {"name": "old-ca", "key": "ca.crt"},
        "s3Credentials": {"accessKeyId": {"name": "old-creds", "key": "ACCESS_KEY_ID"},
                          "secretAccessKey": {"name": "old-creds", "key": "ACCESS_SECRET_KEY"}},
    }}]
    assert "backup" not in spec and "plugins" not in spec
    assert not r.all("ScheduledBackup") and not r.all("ObjectStore")


def test_billing_reads_the_recovered_clusters_secrets_as_any_others(helm):
    """bootstrap.recovery's database and owner make the operator generate
    <clusterName>-app for the owner, as initdb does: billing's env is unchanged."""
    plain = cnpg(helm, values=HA).get("Deployment", "billing")["spec"]["template"]["spec"]
    recovered = cnpg(helm, *PLUGIN_CRD, values=HA, sets=RECOVERY).get("Deployment", "billing")["spec"]["template"]["spec"]
    assert plain["containers"][0]["env"] == recovered["containers"][0]["env"]


RENDERINGS = {
    "plugin": (PLUGIN_CRD, BACKUP),
    "in-tree": ((), IN_TREE),
    "plugin-recovery": (PLUGIN_CRD, RECOVERY),
    "in-tree-recovery-to-a-time": ((), {**RECOVERY, "database.cnpg.backup.method": "barmanObjectStore",
                                        "database.cnpg.backup.endpointCA.name": "s3-ca",
                                        "database.cnpg.recovery.recoveryTarget.targetTime": "2026-12-06T13:04:59.5Z"}),
    "plugin-recovery-to-a-time-no-compression": (PLUGIN_CRD, {
        **RECOVERY, "database.cnpg.backup.wal.compression": "", "database.cnpg.backup.data.compression": "lz4",
        "database.cnpg.recovery.recoveryTarget.targetTime": "2026-12-06T14:04:59+01:00"}),
}


@pytest.mark.parametrize("case", sorted(RENDERINGS))
def test_backup_objects_are_valid_for_cloudnative_pg_1_30_and_the_plugin(helm, case):
    extra, sets = RENDERINGS[case]
    r = cnpg(helm, *extra, values=HA, sets=sets)
    jsonschema.validate(r.get("Cluster", "billing-db"), CLUSTER_SCHEMA)
    for obj in r.all("ScheduledBackup"):
        jsonschema.validate(obj, SCHEDULED_BACKUP_SCHEMA)
    for obj in r.all("ObjectStore"):
        jsonschema.validate(obj, OBJECT_STORE_SCHEMA)
    assert r.all("ScheduledBackup") and (r.all("ObjectStore") or not extra)


def test_the_crd_schemas_catch_misspelt_backup_fields():
    r = cnpg("helm3", *PLUGIN_CRD, values=HA, sets=BACKUP)
    store = json.loads(json.dumps(r.get("ObjectStore", "billing-db-backup")))
    store["spec"]["configuration"]["s3Credentials"]["accessKeyID"] = store["spec"]["configuration"]["s3Credentials"].pop("accessKeyId")
    with pytest.raises(jsonschema.ValidationError, match="accessKeyID"):
        jsonschema.validate(store, OBJECT_STORE_SCHEMA)
    scheduled = json.loads(json.dumps(r.get("ScheduledBackup", "billing-db-backup")))
    scheduled["spec"]["method"] = "barman"
    with pytest.raises(jsonschema.ValidationError, match="'barman' is not one of"):
        jsonschema.validate(scheduled, SCHEDULED_BACKUP_SCHEMA)
    cluster = json.loads(json.dumps(cnpg("helm3", values=HA, sets=IN_TREE).get("Cluster", "billing-db")))
    cluster["spec"]["backup"]["retentionPolicy"] = "30 days"
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        jsonschema.validate(cluster, CLUSTER_SCHEMA)


def test_plugin_missing_is_one_line_naming_the_way_out(helm):
    err = render_error(helm, "--api-versions", "postgresql.cnpg.io/v1/Cluster", "-f", str(HERE.parents[1] / "values/ha.yaml"),
                       *sets_args(BACKUP))
    (line,) = [ln for ln in err.splitlines() if "Barman Cloud plugin" in ln]
    assert line.startswith("Error: execution error at (billing/templates/cnpg-cluster.yaml"), err
    assert ("database.cnpg.backup.method is plugin but the Barman Cloud plugin is not installed (no barmancloud.cnpg.io/v1 "
            "ObjectStore in the API); the chart does not install it: install plugin-barman-cloud in the operator's "
            "namespace, or set database.cnpg.backup.method=barmanObjectStore") in line


HA_ON = {"postgresql.enabled": "false", "database.cnpg.enabled": "true"}
# (id, --set values, Helm 3 says, Helm 4 says, the template says with --skip-schema-validation)
SCHEMA_REFUSALS = [
    ("backup-without-anything", {**HA_ON, "database.cnpg.backup.enabled": "true"},
     "database.cnpg.backup.destinationPath: String length must be greater than or equal to 1",
     "at '/database/cnpg/backup/destinationPath': minLength: got 0, want 1",
     "database.cnpg.backup.enabled is true, so database.cnpg.backup.destinationPath is required"),
    ("backup-without-access-key-id", {**HA_ON, **BACKUP, "database.cnpg.backup.s3Credentials.accessKeyId.name": ""},
     "database.cnpg.backup.s3Credentials.accessKeyId.name: String length must be greater than or equal to 1",
     "at '/database/cnpg/backup/s3Credentials/accessKeyId/name': minLength: got 0, want 1",
     "database.cnpg.backup.enabled is true, so database.cnpg.backup.s3Credentials.accessKeyId.name and "
     "database.cnpg.backup.s3Credentials.secretAccessKey.name are required"),
    ("backup-without-secret-access-key", {**HA_ON, **BACKUP, "database.cnpg.backup.s3Credentials.secretAccessKey.name": ""},
     "database.cnpg.backup.s3Credentials.secretAccessKey.name: String length must be greater than or equal to 1",
     "at '/database/cnpg/backup/s3Credentials/secretAccessKey/name': minLength: got 0, want 1",
     "database.cnpg.backup.s3Credentials.secretAccessKey.name are required"),
    ("recovery-without-server-name", {**HA_ON, **BACKUP, "database.cnpg.recovery.enabled": "true"},
     "database.cnpg.recovery.serverName: String length must be greater than or equal to 1",
     "at '/database/cnpg/recovery/serverName': minLength: got 0, want 1",
     "database.cnpg.recovery.enabled is true, so database.cnpg.recovery.serverName is required"),
    ("recovery-store-without-credentials", {**HA_ON, "database.cnpg.recovery.enabled": "true",
                                            "database.cnpg.recovery.serverName": "billing-db",
                                            "database.cnpg.recovery.destinationPath": "s3://old-backups"},
     "database.cnpg.recovery.s3Credentials.accessKeyId.name: String length must be greater than or equal to 1",
     "at '/database/cnpg/recovery/s3Credentials/accessKeyId/name': minLength: got 0, want 1",
     "database.cnpg.recovery.enabled is true, so database.cnpg.recovery.s3Credentials.accessKeyId.name and "
     "database.cnpg.recovery.s3Credentials.secretAccessKey.name are required"),
    ("destination-not-s3", {**HA_ON, **BACKUP, "database.cnpg.backup.destinationPath": "billing-backups/ha"},
     "database.cnpg.backup.destinationPath: Does not match pattern",
     "at '/database/cnpg/backup/destinationPath': 'billing-backups/ha' does not match pattern", None),
    ("kubernetes-cron-schedule", {**HA_ON, **BACKUP, "database.cnpg.backup.schedule": "0 0 * * *"},
     "database.cnpg.backup.schedule: Does not match pattern",
     "at '/database/cnpg/backup/schedule': '0 0 * * *' does not match pattern", None),
    ("retention-in-hours", {**HA_ON, **BACKUP, "database.cnpg.backup.retentionPolicy": "72h"},
     "database.cnpg.backup.retentionPolicy: Does not match pattern",
     "at '/database/cnpg/backup/retentionPolicy': '72h' does not match pattern", None),
    ("unknown-method", {**HA_ON, **BACKUP, "database.cnpg.backup.method": "volumeSnapshot"},
     'database.cnpg.backup.method must be one of the following: "plugin", "barmanObjectStore"',
     "at '/database/cnpg/backup/method': value must be one of 'plugin', 'barmanObjectStore'", None),
    ("wal-max-parallel-zero", {**HA_ON, **BACKUP, "database.cnpg.backup.wal.maxParallel": "0"},
     "database.cnpg.backup.wal.maxParallel: Must be greater than or equal to 1",
     "at '/database/cnpg/backup/wal/maxParallel': minimum: got 0, want 1", None),
    ("data-compression-zstd", {**HA_ON, **BACKUP, "database.cnpg.backup.data.compression": "zstd"},
     "database.cnpg.backup.data.compression must be one of the following:",
     "at '/database/cnpg/backup/data/compression': value must be one of", None),
    ("target-time-without-offset", {**HA_ON, **RECOVERY, "database.cnpg.recovery.recoveryTarget.targetTime": "2026-12-06 13:04:59"},
     "database.cnpg.recovery.recoveryTarget.targetTime: Does not match pattern",
     "at '/database/cnpg/recovery/recoveryTarget/targetTime': '2026-12-06 13:04:59' does not match pattern", None),
    # CloudNativePG turns a Z into +00:00 only in the T form (machinery's ConvertToPostgresFormat); PostgreSQL 15
    # itself refused recovery_target_time '...Z' at start ("invalid value for parameter"), measured on loopback.
    ("target-time-space-and-z", {**HA_ON, **RECOVERY, "database.cnpg.recovery.recoveryTarget.targetTime": "2026-12-06 13:04:59Z"},
     "database.cnpg.recovery.recoveryTarget.targetTime: Does not match pattern",
     "at '/database/cnpg/recovery/recoveryTarget/targetTime': '2026-12-06 13:04:59Z' does not match pattern", None),
    ("target-time-offset-without-colon", {**HA_ON, **RECOVERY,
                                          "database.cnpg.recovery.recoveryTarget.targetTime": "2026-12-06T14:04:59+0100"},
     "database.cnpg.recovery.recoveryTarget.targetTime: Does not match pattern",
     "at '/database/cnpg/recovery/recoveryTarget/targetTime': '2026-12-06T14:04:59+0100' does not match pattern", None),
]


@pytest.mark.parametrize(("sets", "helm3_says", "helm4_says", "template_says"), [r[1:] for r in SCHEMA_REFUSALS],
                         ids=[r[0] for r in SCHEMA_REFUSALS])
def test_incomplete_backup_settings_are_refused_by_the_schema(helm, sets, helm3_says, helm4_says, template_says):
    err = render_error(helm, "--api-versions", "postgresql.cnpg.io/v1/Cluster", *PLUGIN_CRD, *sets_args(sets))
    assert "values don't meet the specifications of the schema" in err
    assert (helm3_says if helm == "helm3" else helm4_says) in err, err
    if template_says:
        err = render_error(helm, "--api-versions", "postgresql.cnpg.io/v1/Cluster", *PLUGIN_CRD,
                           "--skip-schema-validation", *sets_args(sets))
        assert template_says in err, err


# Combinations, refused by the templates.
REFUSALS = [
    ("recovery-archiving-into-its-source", {**HA_ON, **RECOVERY, "database.cnpg.backup.serverName": ""},
     "The recovered Cluster would archive its WAL into the backups it recovers from (s3://billing-backups/ha/billing-db), "
     "which CloudNativePG refuses (its archive must start empty).\nSet database.cnpg.backup.serverName to a new folder "
     "(e.g. billing-db-2), or give the new Cluster another database.cnpg.clusterName."),
    ("recovery-and-import", {**HA_ON, **RECOVERY, "database.cnpg.import.enabled": "true",
                             "database.cnpg.import.source": "external", "database.cnpg.import.external.host": "old",
                             "database.cnpg.import.external.passwordSecret.name": "old"},
     "database.cnpg.recovery.enabled and database.cnpg.import.enabled are both true: a Cluster is bootstrapped once"),
    ("recovery-without-any-store", {**HA_ON, "database.cnpg.recovery.enabled": "true",
                                    "database.cnpg.recovery.serverName": "billing-db"},
     "database.cnpg.recovery.enabled is true, but neither database.cnpg.recovery.destinationPath nor "
     "database.cnpg.backup.destinationPath is set"),
]


@pytest.mark.parametrize(("sets", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_backup_combinations_that_cannot_work_are_refused(helm, sets, message):
    err = render_error(helm, "--api-versions", "postgresql.cnpg.io/v1/Cluster", *PLUGIN_CRD, *sets_args(sets))
    assert message in err, err


def test_notes_say_what_is_backed_up_and_how_to_check(helm, tmp_path):
    from test_cnpg import install_notes
    from fake_apiserver import FakeApiServer

    with FakeApiServer() as api:
        api.kubeconfig_path = str(api.kubeconfig(tmp_path))
        text = install_notes(helm, api, {**HA_ON, **BACKUP})
        assert ("Backups: every WAL segment is archived to s3://billing-backups/ha/billing-db/ as it fills, and at least every\n"
                "archive_timeout (5min): a lost cluster loses at most what was committed since. A base backup is taken\n"
                'on "0 0 0 * * *" and once now (ScheduledBackup billing-db-backup), kept 30d, through the Barman Cloud plugin.') in text
        assert ("kubectl -n default get cluster billing-db -o jsonpath='{.status.conditions[?(@.type==\"ContinuousArchiving\")]"
                ".status}'") in text
        text = install_notes(helm, api, {**HA_ON, **IN_TREE, "database.cnpg.parameters.archive_timeout": "1min"})
        assert "archive_timeout (1min)" in text
        assert "through the in-tree barmanObjectStore (deprecated, removed in CloudNativePG 1.32)" in text
        assert "Backups: none (database.cnpg.backup.enabled is false)" in install_notes(helm, api, HA_ON)
        text = install_notes(helm, api, {**HA_ON, **RECOVERY,
                                         "database.cnpg.recovery.recoveryTarget.targetTime": "2026-12-06T13:04:59Z"})
        assert ("Recovery: the cluster is made from the backups of billing-db in s3://billing-backups/ha, replayed to\n"
                "2026-12-06T13:04:59Z. Check the rows before moving clients here:") in text


def test_values_ha_backup_is_ha_with_backups_through_the_plugin(helm):
    r = cnpg(helm, *PLUGIN_CRD, values=("ha.yaml", "ha-backup.yaml"))
    ha = cnpg(helm, values=HA)
    cluster = r.get("Cluster", "billing-db")
    jsonschema.validate(cluster, CLUSTER_SCHEMA)
    assert {k: v for k, v in cluster["spec"].items() if k != "plugins"} == ha.get("Cluster", "billing-db")["spec"]
    store = r.get("ObjectStore", "billing-db-backup")
    jsonschema.validate(store, OBJECT_STORE_SCHEMA)
    assert store["spec"]["configuration"]["destinationPath"] == "s3://billing-backups/ha"
    assert store["spec"]["retentionPolicy"] == "7d"
    jsonschema.validate(r.get("ScheduledBackup", "billing-db-backup"), SCHEDULED_BACKUP_SCHEMA)
    others = lambda rr: sorted(n for n in rr.names() if not n.startswith(("Cluster/", "ObjectStore/", "ScheduledBackup/")))  # noqa: E731
    assert others(r) == others(ha), "backups add objects, and change nothing else of the release"
