"""values.schema.json: every value is described, and bad values are refused
by `helm template`/`helm install` with a message that names the value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import CHART, render_error

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def _walk(values, schema, path=""):
    """Yields (path, schema node) for every key of values.yaml."""
    for key, value in values.items():
        here = f"{path}.{key}" if path else key
        props = schema.get("properties", {})
        assert key in props, f"{here} is in values.yaml but not in values.schema.json"
        node = props[key]
        yield here, node
        if isinstance(value, dict) and node.get("properties"):
            yield from _walk(value, node, here)


def test_every_value_is_in_the_schema_with_a_description():
    seen = list(_walk(DEFAULTS, SCHEMA))
    assert len(seen) > 60
    for path, node in seen:
        assert node.get("description"), f"{path} has no description in values.schema.json"


def test_schema_has_no_keys_missing_from_values_yaml():
    def walk(schema, values, path=""):
        for key, node in schema.get("properties", {}).items():
            here = f"{path}.{key}" if path else key
            if key == "global":
                continue
            assert key in values, f"{here} is in the schema but has no default in values.yaml"
            if node.get("properties"):
                walk(node, values[key], here)

    walk(SCHEMA, DEFAULTS)


def test_every_object_in_the_schema_refuses_unknown_keys():
    def walk(node, path="(root)"):
        if node.get("properties"):
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}")

    walk(SCHEMA)


def test_the_defaults_and_overlays_validate(helm):
    from conftest import run_helm

    for extra in ([], ["-f", "values/task1.yaml"], ["-f", "values/task2.yaml"], ["-f", "values/task2.yaml", "-f", "values/kind.yaml"]):
        proc = run_helm(helm, "lint", "--strict", str(CHART), *[str(CHART.parents[1] / a) if a.startswith("values/") else a for a in extra])
        assert proc.returncode == 0, proc.stdout + proc.stderr


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad-values.yaml"
    path.write_text(text)
    return str(path)


# (id, helm args, what Helm 3 says, what Helm 4 says). Each message names the
# value and what is wrong with it.
REJECTIONS = [
    (
        "external-sslmode-unknown",
        ["--set", "externalDatabase.sslmode=verify"],
        "externalDatabase.sslmode: externalDatabase.sslmode must be one of the following:",
        "at '/externalDatabase/sslmode': value must be one of",
    ),
    (
        "listing-stall-timeout-zero",
        ["--set", "config.getallStallTimeoutSecs=0"],
        "config.getallStallTimeoutSecs: Must be greater than or equal to 1",
        "at '/config/getallStallTimeoutSecs': minimum: got 0, want 1",
    ),
    (
        "listings-not-a-number",
        ["--set", "config.getallMaxConcurrent=many"],
        "config.getallMaxConcurrent: Invalid type. Expected: [integer,null], given: string",
        "at '/config/getallMaxConcurrent': got string, want null or integer",
    ),
    (
        "unknown-log-format",
        ["--set", "config.logFormat=yaml"],
        'config.logFormat must be one of the following: "text", "json"',
        "at '/config/logFormat': value must be one of 'text', 'json'",
    ),
    (
        "header-limit-below-hypers-minimum",
        ["--set", "config.maxHeaderBytes=1024"],
        "config.maxHeaderBytes: Must be greater than or equal to 8192",
        "at '/config/maxHeaderBytes': minimum: got 1,024, want 8,192",
    ),
    (
        "zero-header-timeout",
        ["--set", "config.headerReadTimeoutSecs=0"],
        "config.headerReadTimeoutSecs: Must be greater than or equal to 1",
        "at '/config/headerReadTimeoutSecs': minimum: got 0, want 1",
    ),
    (
        "body-timeout-over-5-minutes",
        ["--set", "config.bodyReadTimeoutSecs=301"],
        "config.bodyReadTimeoutSecs: Must be less than or equal to 300",
        "at '/config/bodyReadTimeoutSecs': maximum: got 301, want 300",
    ),
    (
        "log-write-timeout-over-a-minute",
        ["--set", "config.logWriteTimeoutSecs=61"],
        "config.logWriteTimeoutSecs: Must be less than or equal to 60",
        "at '/config/logWriteTimeoutSecs': maximum: got 61, want 60",
    ),
    (
        "too-few-connections",
        ["--set", "config.maxConnections=8"],
        "config.maxConnections: Must be greater than or equal to 16",
        "at '/config/maxConnections': minimum: got 8, want 16",
    ),
    (
        "unknown-workload-kind",
        ["--set", "workload.kind=ReplicaSet"],
        'workload.kind must be one of the following: "Deployment", "StatefulSet"',
        "at '/workload/kind': value must be one of 'Deployment', 'StatefulSet'",
    ),
    (
        "negative-replicas",
        ["--set", "workload.replicas=-1"],
        "workload.replicas: Must be greater than or equal to 0",
        "at '/workload/replicas': minimum: got -1, want 0",
    ),
    (
        "string-replicas",
        ["--set-string", "workload.replicas=3"],
        "workload.replicas: Invalid type. Expected: integer, given: string",
        "at '/workload/replicas': got string, want integer",
    ),
    (
        "word-replicas-in-a-file",
        ["VALUES:workload:\n  replicas: three\n"],
        "workload.replicas: Invalid type. Expected: integer, given: string",
        "at '/workload/replicas': got string, want integer",
    ),
    (
        "reclaim-policy-recycle",
        ["--set", "storageClass.reclaimPolicy=Recycle"],
        'storageClass.reclaimPolicy must be one of the following: "Retain", "Delete"',
        "at '/storageClass/reclaimPolicy': value must be one of 'Retain', 'Delete'",
    ),
    (
        "bad-volume-binding-mode",
        ["--set", "storageClass.volumeBindingMode=OnDemand"],
        'storageClass.volumeBindingMode must be one of the following: "Immediate", "WaitForFirstConsumer"',
        "at '/storageClass/volumeBindingMode': value must be one of 'Immediate', 'WaitForFirstConsumer'",
    ),
    (
        "size-not-a-quantity",
        ["--set", "postgresql.persistence.size=one-gig"],
        "postgresql.persistence.size: Does not match pattern",
        "at '/postgresql/persistence/size': 'one-gig' does not match pattern",
    ),
    (
        "log-size-not-a-quantity",
        ["--set", "logs.persistence.size=1GB"],
        "logs.persistence.size: Does not match pattern",
        "at '/logs/persistence/size': '1GB' does not match pattern",
    ),
    (
        "empty-image-repository",
        ["--set", "image.repository="],
        "image.repository: String length must be greater than or equal to 1",
        "at '/image/repository': minLength: got 0, want 1",
    ),
    (
        "negative-prestop-pause",
        ["--set", "preStopSleepSeconds=-1"],
        "preStopSleepSeconds: Must be greater than or equal to 0",
        "at '/preStopSleepSeconds': minimum: got -1, want 0",
    ),
    (
        "shutdown-timeout-over-an-hour",
        ["--set", "config.shutdownTimeoutSecs=3601"],
        "config.shutdownTimeoutSecs: Must be less than or equal to 3600",
        "at '/config/shutdownTimeoutSecs': maximum: got 3,601, want 3,600",
    ),
    (
        "pdb-max-unavailable-a-word",
        ["--set", "podDisruptionBudget.maxUnavailable=half"],
        "podDisruptionBudget.maxUnavailable: Does not match pattern '^[0-9]+%$'",
        "at '/podDisruptionBudget/maxUnavailable': 'oneOf' failed, none matched",
    ),
    (
        "spread-unknown-when-unsatisfiable",
        ["--set-json", 'topologySpreadConstraints=[{"maxSkew":1,"topologyKey":"x","whenUnsatisfiable":"Never"}]'],
        'topologySpreadConstraints.0.whenUnsatisfiable must be one of the following: "DoNotSchedule", "ScheduleAnyway"',
        "at '/topologySpreadConstraints/0/whenUnsatisfiable': value must be one of 'DoNotSchedule', 'ScheduleAnyway'",
    ),
    (
        "hpa-zero-min-replicas",
        ["--set", "autoscaling.minReplicas=0"],
        "autoscaling.minReplicas: Must be greater than or equal to 1",
        "at '/autoscaling/minReplicas': minimum: got 0, want 1",
    ),
    (
        "hpa-cpu-target-over-100",
        ["--set", "autoscaling.targetCPUUtilizationPercentage=101"],
        "autoscaling.targetCPUUtilizationPercentage: Must be less than or equal to 100",
        "at '/autoscaling/targetCPUUtilizationPercentage': maximum: got 101, want 100",
    ),
    (
        "volume-lock-file-outside-the-mount",
        ["--set", "postgresql.volumeLock.file=../x"],
        "postgresql.volumeLock.file: Does not match pattern '^[A-Za-z0-9._-]+$'",
        "at '/postgresql/volumeLock/file': '../x' does not match pattern '^[A-Za-z0-9._-]+$'",
    ),
    (
        "superuser-name-not-a-role-name",
        ["--set", "postgresql.auth.superuser.username=Admin"],
        "postgresql.auth.superuser.username: Does not match pattern '^[a-z_][a-z0-9_]{0,62}$'",
        "at '/postgresql/auth/superuser/username': 'Admin' does not match pattern '^[a-z_][a-z0-9_]{0,62}$'",
    ),
    (
        "unknown-top-level-key",
        ["--set", "replicaCount=3"],
        "(root): Additional property replicaCount is not allowed",
        "at '': additional properties 'replicaCount' not allowed",
    ),
    (
        "unknown-nested-key",
        ["--set", "postgresql.persistance.size=2Gi"],
        "postgresql: Additional property persistance is not allowed",
        "at '/postgresql': additional properties 'persistance' not allowed",
    ),
]


@pytest.mark.parametrize(("args", "helm3_says", "helm4_says"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_bad_values_are_refused(helm, tmp_path, args, helm3_says, helm4_says):
    expanded: list[str] = []
    for a in args:
        expanded += ["-f", _write(tmp_path, a[len("VALUES:") :])] if a.startswith("VALUES:") else [a]
    err = render_error(helm, *expanded)
    assert "values don't meet the specifications of the schema" in err
    expected = helm3_says if helm == "helm3" else helm4_says
    assert expected in err, err


def test_validated_kubernetes_range_matches_chart_kube_version():
    """scripts/check-chart.sh validates the oldest supported Kubernetes; it
    must be the floor that Chart.yaml declares."""
    import re

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    script = (CHART.parents[1] / "scripts" / "check-chart.sh").read_text()
    oldest = re.search(r"^KUBE_OLDEST=(\S+)$", script, re.M).group(1)
    assert chart["kubeVersion"] == f">={oldest}-0"
