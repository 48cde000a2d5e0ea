"""The chart's PrometheusRule (metrics.prometheusRule): billing's alerts.

- render tests (Helm 3 and Helm 4): off by default, its labels and namespace,
  the job the alerts select, which groups each mode gets (volumes only with a
  claim, CloudNativePG only in that mode, the bundled backup only with
  backup.enabled in bundled mode), the refusals;
- every alert has summary, description and a runbook_url whose section
  exists in docs/operations.md and docs/operations.ru.md;
- `promtool check rules` on the rule groups of every mode, and `promtool test
  rules` with the unit tests in tests/chart/promtool/ (each alert fires on a
  broken series and not on a healthy one), by promtool 3.16.0, which
  scripts/install-tools.sh builds from the Prometheus Go module;
- the rendered object against the Prometheus Operator's own PrometheusRule CRD
  schema (v0.94.1, as test_servicemonitor_crd.py does for the ServiceMonitor);
- the metric names: billing's as the real binary exports them (the scrape of
  test_dashboard.py, parsed by Prometheus' PromQL parser), CloudNativePG's in
  its v1.30.0 source.

The bundled-backup rules are rendered with backup.enabled=true (the CronJob's
switch); the rules need only that one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CHART, ROOT, TOOLS_BIN, notes, render, render_error, run_helm

sys.path.insert(0, str(Path(__file__).parent / "promtool"))
from rule_file import rule_file  # noqa: E402
from test_dashboard import check_names, parse, promql_tool, scraped  # noqa: E402,F401
from test_servicemonitor_crd import OPERATOR_MODULE, OPERATOR_VERSION, errors, structural  # noqa: E402

PROMTOOL_TESTS = Path(__file__).parent / "promtool"
NS = "shop"
ON = {"metrics.prometheusRule.enabled": "true"}
CNPG_API = ("--api-versions", "postgresql.cnpg.io/v1/Cluster")
BACKUP = ("--set", "backup.enabled=true")

# The renders the promtool unit tests run on (release billing, namespace shop).
MODES = {
    "service": ("-f", "values/task2.yaml", "--set", "logs.enabled=true", "--set", "metrics.serviceMonitor.enabled=true"),
    "cnpg": ("-f", "values/ha.yaml", *CNPG_API),
    "backup": ("-f", "values/task1.yaml", *BACKUP),
}
SERVICE_ALERTS = {
    "BillingDown", "BillingNotReady", "BillingPaymentsFailing", "BillingPaymentOutcomeUnknown",
    "BillingTransactionLogLinesLost", "BillingTransactionLogBacklog",
}
VOLUME_ALERTS = {"BillingVolumeFillingUp", "BillingVolumeAlmostFull"}
CNPG_ALERTS = {"BillingDatabaseWALArchivingFailing", "BillingDatabaseBackupTooOld", "BillingDatabaseBackupFailed"}
BACKUP_ALERTS = {"BillingBackupFailed", "BillingBackupTooOld"}


def promtool() -> Path:
    path = TOOLS_BIN / "promtool"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run scripts/install-tools.sh (it builds promtool from the Prometheus Go module)", pytrace=False)
    return path


def rendered_text(helm: str, *args: str) -> str:
    proc = run_helm(helm, "template", "billing", str(CHART), "--namespace", NS, "--set", "metrics.prometheusRule.enabled=true", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def rule_obj(helm: str, *args: str) -> dict:
    docs = [d for d in yaml.safe_load_all(rendered_text(helm, *args)) if d]
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    return rule


def alerts(rule: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def in_repo(args: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(ROOT / a) if a.startswith("values/") else a for a in args)


# ------------------------------------------------------------------ render tests


@pytest.mark.parametrize("values", [(), ("task1.yaml",), ("task2.yaml",)], ids=["default", "task1", "task2"])
def test_off_by_default(helm, values):
    assert render(helm, values=values).all("PrometheusRule") == []
    assert render(helm, values=values, sets={"backup.enabled": "true"}).all("PrometheusRule") == []


def test_labels_namespace_and_name(helm):
    rule = rule_obj(helm, "-f", str(ROOT / "values/task1.yaml"), "--set", "metrics.prometheusRule.additionalLabels.release=prometheus",
                    "--set", "metrics.prometheusRule.namespace=monitoring")
    meta = rule["metadata"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert meta["name"] == "billing"
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["release"] == "prometheus"
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"):
        assert key in meta["labels"], key
    # The alerts still watch the release's namespace, not the rule's.
    assert 'namespace="shop"' in alerts(rule)["BillingDown"]["expr"]
    assert rule_obj(helm, "-f", str(ROOT / "values/task1.yaml"))["metadata"]["namespace"] == NS


@pytest.mark.parametrize(
    ("args", "job"),
    [
        (("-f", "values/task1.yaml"), "kubernetes-pods"),
        (("-f", "values/task1.yaml", "--set", "metrics.serviceMonitor.enabled=true"), "billing"),
        (("-f", "values/task2.yaml", "--set", "metrics.serviceMonitor.enabled=true"), "billing-stateful"),
        (("-f", "values/task2.yaml", "--set", "metrics.prometheusRule.job=billing-pods"), "billing-pods"),
    ],
    ids=["annotations", "servicemonitor-deployment", "servicemonitor-statefulset", "explicit"],
)
def test_the_alerts_select_billing_by_namespace_and_job(helm, args, job):
    found = alerts(rule_obj(helm, *in_repo(args)))
    for name in SERVICE_ALERTS:
        assert f'namespace="{NS}", job="{job}"' in found[name]["expr"], (name, found[name]["expr"])


@pytest.mark.parametrize(
    ("args", "expected", "claims"),
    [
        (("-f", "values/task1.yaml"), SERVICE_ALERTS | VOLUME_ALERTS, "billing-postgresql"),
        (("-f", "values/task2.yaml"), SERVICE_ALERTS | VOLUME_ALERTS, "billing-postgresql|log-billing-stateful-[0-9]+"),
        (("-f", "values/task1.yaml", "--set", "postgresql.enabled=false", "--set", "externalDatabase.url=postgres://billing@db.example.com/billing",
          "--set", "externalDatabase.existingSecret=db"), SERVICE_ALERTS, None),
        (("-f", "values/ha.yaml", *CNPG_API), SERVICE_ALERTS | VOLUME_ALERTS | CNPG_ALERTS, "billing-db-[0-9]+(-wal)?"),
        (("-f", "values/task1.yaml", *BACKUP), SERVICE_ALERTS | VOLUME_ALERTS | BACKUP_ALERTS, "billing-postgresql|billing-backup"),
        # The dumps on a claim of the operator's: that claim is the one watched.
        (("-f", "values/task1.yaml", *BACKUP, "--set", "backup.storage.existingClaim=ledger-dumps"),
         SERVICE_ALERTS | VOLUME_ALERTS | BACKUP_ALERTS, "billing-postgresql|ledger-dumps"),
        # backup.enabled with CloudNativePG is refused (tests/chart/test_backup.py): its backups are database.cnpg.backup.
    ],
    ids=["task1", "task2", "external-db", "cnpg", "bundled-backup", "bundled-backup-existing-claim"],
)
def test_each_mode_gets_the_alerts_that_apply(helm, args, expected, claims):
    found = alerts(rule_obj(helm, *in_repo(args)))
    assert set(found) == expected
    if claims:
        assert f'persistentvolumeclaim=~"{claims}"' in found["BillingVolumeAlmostFull"]["expr"]


def test_every_alert_has_a_runbook_in_both_languages(helm):
    rule = rule_obj(helm, "-f", str(ROOT / "values/task1.yaml"), *BACKUP)
    every = alerts(rule) | alerts(rule_obj(helm, "-f", str(ROOT / "values/ha.yaml"), *CNPG_API))
    assert set(every) == SERVICE_ALERTS | VOLUME_ALERTS | CNPG_ALERTS | BACKUP_ALERTS
    docs = {name: (ROOT / "docs" / name).read_text() for name in ("operations.md", "operations.ru.md")}
    for name, r in every.items():
        assert r["labels"]["severity"] in ("critical", "warning"), name
        ann = r["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, name
        assert ann["summary"] and len(ann["description"]) > 40, name
        assert ann["runbook_url"] == f"docs/operations.md#{name.lower()}"
        for doc, text in docs.items():
            # GitHub's anchor of a "### BillingDown" heading is #billingdown.
            assert re.search(rf"^#+ {name}\s*$", text, re.M), f"{doc} has no section '{name}' for its runbook_url"


def test_runbook_base_url(helm):
    rule = rule_obj(helm, "-f", str(ROOT / "values/task1.yaml"), "--set", "metrics.prometheusRule.runbookBaseUrl=https://git.example.com/billing/blob/main/docs/operations.md")
    assert alerts(rule)["BillingDown"]["annotations"]["runbook_url"] == "https://git.example.com/billing/blob/main/docs/operations.md#billingdown"


def test_thresholds_come_from_the_values(helm):
    rule = rule_obj(helm, "-f", str(ROOT / "values/task1.yaml"), *BACKUP,
                    "--set", "metrics.prometheusRule.alerts.downFor=30s",
                    "--set-json", "metrics.prometheusRule.alerts.paymentErrorRatio=0.2",
                    "--set", "metrics.prometheusRule.alerts.volumeFillingUpWithin=1w",
                    "--set", "metrics.prometheusRule.alerts.bundledBackupMaxAge=1d2h")
    found = alerts(rule)
    assert found["BillingDown"]["for"] == "30s"
    assert found["BillingPaymentsFailing"]["expr"].endswith("> 0.2")
    assert ", 604800) < 0" in found["BillingVolumeFillingUp"]["expr"]
    assert "> 93600" in found["BillingBackupTooOld"]["expr"]


def test_notes_say_where_the_alerts_are():
    """NOTES.txt (Helm 4 renders it without a cluster) names the rule and the job it watches, only when on."""
    on = notes("helm4", "-f", str(ROOT / "values/task1.yaml"), "--set", "metrics.prometheusRule.enabled=true", namespace=NS)
    assert "Alerts: PrometheusRule billing in namespace shop" in on
    assert 'job="kubernetes-pods" in namespace shop' in on
    assert "docs/operations.md, Alerts" in on
    assert "PrometheusRule" not in notes("helm4", "-f", str(ROOT / "values/task1.yaml"), namespace=NS)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"metrics.enabled": "false"}, "metrics.prometheusRule.enabled is true but metrics.enabled is false"),
        ({"metrics.prometheusRule.alerts.downFor": "2 minutes"}, "downFor"),
        ({"metrics.prometheusRule.alerts.paymentErrorRatio": "5"}, "paymentErrorRatio"),
        ({"metrics.prometheusRule.alerts.txlogQueuedLines": "0"}, "txlogQueuedLines"),
        ({"metrics.prometheusRule.runbookBaseUrl": ""}, "runbookBaseUrl"),
        ({"metrics.prometheusRule.namespace": "Monitoring"}, "namespace"),
        ({"metrics.prometheusRule.alerts.downfor": "1m"}, "downfor"),
    ],
    ids=["without-metrics", "bad-duration", "ratio-over-1", "zero-lines", "empty-runbook", "bad-namespace", "unknown-key"],
)
def test_refusals_name_the_value(helm, sets, message):
    args = ["-f", str(ROOT / "values/task1.yaml"), "--set", "metrics.prometheusRule.enabled=true"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    assert message in render_error(helm, *args)


# ------------------------------------------------------------------ promtool


@pytest.fixture(scope="module")
def rule_dir(tmp_path_factory) -> Path:
    """The rule files of MODES (with and without annotations) beside copies of
    the unit tests, as `promtool test rules` wants them."""
    out = tmp_path_factory.mktemp("rules")
    for mode, args in MODES.items():
        text = rendered_text("helm3", *in_repo(args))
        (out / f"{mode}.rules.yaml").write_text(rule_file(text, without_annotations=True))
        (out / f"{mode}-annotated.rules.yaml").write_text(rule_file(text))
    for test in PROMTOOL_TESTS.glob("*_test.yaml"):
        shutil.copy(test, out / test.name)
    return out


def test_promtool_is_the_pinned_prometheus():
    versions = (ROOT / "cluster" / "versions.sh").read_text()
    want = re.search(r"^PROMETHEUS_VERSION=v(\S+)", versions, re.M).group(1)
    out = subprocess.run([str(promtool()), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"promtool, version {want} "), out


@pytest.mark.parametrize("mode", sorted(MODES))
def test_promtool_check_rules(rule_dir, mode):
    for suffix in ("", "-annotated"):
        proc = subprocess.run([str(promtool()), "check", "rules", str(rule_dir / f"{mode}{suffix}.rules.yaml")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_alert_has_a_promtool_unit_test():
    tested = set()
    for test in PROMTOOL_TESTS.glob("*_test.yaml"):
        for case in yaml.safe_load(test.read_text())["tests"]:
            for t in case.get("alert_rule_test", []):
                if t["exp_alerts"]:
                    tested.add(t["alertname"])
    assert tested == SERVICE_ALERTS | VOLUME_ALERTS | CNPG_ALERTS | BACKUP_ALERTS


@pytest.mark.parametrize("test", sorted(p.name for p in PROMTOOL_TESTS.glob("*_test.yaml")))
def test_promtool_unit_tests(rule_dir, test):
    proc = subprocess.run([str(promtool()), "test", "rules", test], cwd=rule_dir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_promtool_unit_tests_can_fail(rule_dir):
    """Not vacuous: the same tests on rules with a wrong threshold fail."""
    broken = (rule_dir / "service.rules.yaml").read_text().replace("> 0.05", "> 0.5")
    assert broken != (rule_dir / "service.rules.yaml").read_text()
    (rule_dir / "broken.rules.yaml").write_text(broken)
    test = (rule_dir / "service_test.yaml").read_text().replace("service.rules.yaml", "broken.rules.yaml")
    (rule_dir / "broken_test.yaml").write_text(test)
    proc = subprocess.run([str(promtool()), "test", "rules", "broken_test.yaml"], cwd=rule_dir, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "BillingPaymentsFailing" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ the operator's CRD


@pytest.fixture(scope="module")
def operator_dir() -> Path:
    go = shutil.which("go")
    if not go:
        pytest.fail("go is not on PATH: the PrometheusRule CRD comes from the prometheus-operator Go module (install Go)", pytrace=False)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    proc = subprocess.run([go, "mod", "download", "-json", f"{OPERATOR_MODULE}@{OPERATOR_VERSION}"],
                          capture_output=True, text=True, env=env, timeout=600, cwd="/")
    info = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if proc.returncode != 0 or "Dir" not in info:
        pytest.fail(f"go mod download {OPERATOR_MODULE}@{OPERATOR_VERSION} failed: {info.get('Error', proc.stderr)}", pytrace=False)
    return Path(info["Dir"])


@pytest.fixture(scope="module")
def rule_validator(operator_dir):
    import jsonschema

    crd = yaml.safe_load((operator_dir / "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == "PrometheusRule"
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(structural(served["schema"]["openAPIV3Schema"]))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_rendered_rule_matches_the_crd_schema(helm, rule_validator, mode):
    assert errors(rule_validator, rule_obj(helm, *in_repo(MODES[mode]))) == []


def test_the_crd_check_refuses_what_the_api_server_would(rule_validator):
    rule = rule_obj("helm3", "-f", str(ROOT / "values/task1.yaml"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "2 minutes"
    rule["spec"]["groups"][0]["rules"][1]["severity"] = "critical"
    found = errors(rule_validator, rule)
    assert any("rules/0/for" in e for e in found), found
    assert any("severity" in e for e in found), found


# ------------------------------------------------------------------ metric names


def billing_exprs() -> list[str]:
    rule = rule_obj("helm3", "-f", str(ROOT / "values/task2.yaml"), "--set", "logs.enabled=true")
    return [r["expr"] for g in rule["spec"]["groups"] if g["name"] in ("billing.service", "billing.payments") for r in g["rules"]]


def test_billing_alerts_use_only_what_billing_exports(scraped, promql_tool):
    exprs = billing_exprs()
    assert len(exprs) == len(SERVICE_ALERTS)
    # up is Prometheus' own; job is set by every scrape.
    exported = {name: labels | {"job"} for name, labels in scraped["labels"].items()} | {"up": {"job", "namespace", "pod"}}
    assert check_names(parse(promql_tool, exprs), exported) == []
    # Not vacuous: a name billing does not export is caught.
    wrong = [exprs[0].replace("up{", "billing_up{")]
    assert check_names(parse(promql_tool, wrong), exported) != []


def test_cloudnative_pg_metric_names_are_in_its_source():
    """pg_stat_archiver's columns in CloudNativePG v1.30.0's default
    monitoring queries, and its collector's backup timestamps (the module
    cluster/cnpg builds the operator from)."""
    go = shutil.which("go")
    if not go:
        pytest.fail("go is not on PATH: the CloudNativePG source comes from its Go module", pytrace=False)
    versions = (ROOT / "cluster" / "versions.sh").read_text()
    cnpg = re.search(r"^CNPG_VERSION=(\S+)", versions, re.M).group(1)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    proc = subprocess.run([go, "mod", "download", "-json", f"github.com/cloudnative-pg/cloudnative-pg@{cnpg}"],
                          capture_output=True, text=True, env=env, timeout=600, cwd="/")
    info = json.loads(proc.stdout) if proc.stdout.strip() else {}
    assert proc.returncode == 0 and "Dir" in info, info.get("Error", proc.stderr)
    src = Path(info["Dir"])
    queries = yaml.safe_load((src / "config/manager/default-monitoring.yaml").read_text())
    queries = yaml.safe_load(queries["data"]["queries"]) if "data" in queries else queries
    archiver = {next(iter(m)) for m in queries["pg_stat_archiver"]["metrics"]}
    collector = (src / "pkg/management/postgres/webserver/metricserver/pg_collector.go").read_text()
    rule = rule_obj("helm3", "-f", str(ROOT / "values/ha.yaml"), *CNPG_API)
    used = set(re.findall(r"\b(cnpg_[a-z_]+)", " ".join(r["expr"] for r in alerts(rule).values())))
    assert used, "no cnpg_ metric in the CloudNativePG alerts"
    for name in used:
        if name.startswith("cnpg_pg_stat_archiver_"):
            assert name.removeprefix("cnpg_pg_stat_archiver_") in archiver, name
        else:
            assert name.startswith("cnpg_collector_"), name
            assert f'Name:      "{name.removeprefix("cnpg_collector_")}"' in collector, name
