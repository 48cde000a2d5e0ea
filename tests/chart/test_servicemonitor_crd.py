"""The chart's ServiceMonitor against the real CRD schema, offline.

The CustomResourceDefinition is the Prometheus Operator's own
(example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml of
the Go module github.com/prometheus-operator/prometheus-operator, at the
version cluster/versions.sh pins), fetched with `go mod download`. Its
openAPIV3Schema is checked here as the API server prunes and validates a
structural schema: unknown fields are errors (the e2e also sends the object
to a real API server with `kubectl apply --dry-run=server`, which runs the
CRD's CEL rules as well).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, render

VERSIONS = (ROOT / "cluster" / "versions.sh").read_text()
OPERATOR_VERSION = re.search(r"^PROMETHEUS_OPERATOR_VERSION=(\S+)", VERSIONS, re.M).group(1)
OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
CRD_PATH = "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"


@pytest.fixture(scope="module")
def crd() -> dict:
    go = shutil.which("go")
    if not go:
        pytest.fail("go is not on PATH: the ServiceMonitor CRD comes from the prometheus-operator Go module (install Go)", pytrace=False)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"{OPERATOR_MODULE}@{OPERATOR_VERSION}"],
        capture_output=True, text=True, env=env, timeout=600, cwd="/",
    )
    info = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if proc.returncode != 0 or "Dir" not in info:
        pytest.fail(f"go mod download {OPERATOR_MODULE}@{OPERATOR_VERSION} failed: {info.get('Error', proc.stderr)}", pytrace=False)
    return yaml.safe_load((Path(info["Dir"]) / CRD_PATH).read_text())


def structural(node: dict) -> dict:
    """An openAPIV3Schema node as JSON Schema with the API server's rules for
    unknown fields: an object with properties accepts no others unless it
    says x-kubernetes-preserve-unknown-fields."""
    node = copy.deepcopy(node)
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    if "properties" in node:
        node["properties"] = {k: structural(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
            node["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = structural(node["additionalProperties"])
    if isinstance(node.get("items"), dict):
        node["items"] = structural(node["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            node[key] = [structural(n) for n in node[key]]
    return node


@pytest.fixture(scope="module")
def validator(crd):
    import jsonschema

    [served] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert served["served"] and served["storage"]
    schema = structural(served["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def errors(validator, obj) -> list[str]:
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj))


def service_monitor(helm, values, sets=None):
    r = render(helm, values=values, sets={"metrics.serviceMonitor.enabled": "true", **(sets or {})})
    [sm] = r.all("ServiceMonitor")
    return sm


def test_the_crd_is_the_operators_servicemonitor(crd):
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "servicemonitors.monitoring.coreos.com"
    assert crd["spec"]["group"] == "monitoring.coreos.com"
    assert crd["spec"]["names"]["kind"] == "ServiceMonitor"


@pytest.mark.parametrize("values", [("task1.yaml",), ("task2.yaml",)], ids=["task1", "task2"])
def test_rendered_service_monitor_matches_the_crd_schema(helm, validator, values):
    sm = service_monitor(helm, values, {"metrics.serviceMonitor.labels.release": "prometheus", "metrics.serviceMonitor.interval": "1m30s"})
    assert errors(validator, sm) == []


def test_the_schema_check_refuses_what_the_api_server_would(helm, validator):
    """Not vacuous: the converted schema refuses a bad duration, an unknown
    field and a wrong type."""
    sm = service_monitor(helm, ("task1.yaml",))
    bad_interval = copy.deepcopy(sm)
    bad_interval["spec"]["endpoints"][0]["interval"] = "30 seconds"
    assert any("endpoints/0/interval" in e for e in errors(validator, bad_interval))
    unknown = copy.deepcopy(sm)
    unknown["spec"]["endpoints"][0]["targetPortt"] = "http"
    assert any("targetPortt" in e for e in errors(validator, unknown))
    wrong_type = copy.deepcopy(sm)
    wrong_type["spec"]["namespaceSelector"]["matchNames"] = "default"
    assert any("namespaceSelector/matchNames" in e for e in errors(validator, wrong_type))


DURATIONS = ["30s", "1m", "1m30s", "90s", "500ms", "2h", "1d", "1w", "1y", "1h0m5s", "30 seconds", "1.5m", "30S", "1s1m", "m", "30"]


def test_the_chart_takes_exactly_the_durations_the_crd_takes(helm, crd):
    """metrics.serviceMonitor.interval: the chart (schema and template check)
    accepts a duration if and only if the CRD's pattern does. (The CRD also
    takes "0" and "", which mean "no value" there; the chart requires one.)"""
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    pattern = served["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["endpoints"]["items"]["properties"]["interval"]["pattern"]
    from conftest import CHART, run_helm

    for d in DURATIONS:
        crd_takes = re.search(pattern, d) is not None
        proc = run_helm(
            helm, "template", "billing", str(CHART),
            "--set", "metrics.serviceMonitor.enabled=true",
            "--set-string", f"metrics.serviceMonitor.interval={d}",
            "--set-string", "metrics.serviceMonitor.scrapeTimeout=1ms",
        )
        assert (proc.returncode == 0) == crd_takes, f"{d!r}: chart {'accepts' if proc.returncode == 0 else 'refuses'}, CRD {'accepts' if crd_takes else 'refuses'}\n{proc.stderr}"
