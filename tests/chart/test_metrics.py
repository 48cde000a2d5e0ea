"""The chart's metrics section: METRICS_ENABLED, the pods' prometheus.io/*
scrape annotations, the opt-in ServiceMonitor (both workload modes) and the
Grafana dashboard ConfigMap, and the values they refuse."""

from __future__ import annotations

import json

import pytest
from conftest import container, env_of, render, render_error

SM_ON = {"metrics.serviceMonitor.enabled": "true"}
DASH_ON = {"metrics.dashboard.enabled": "true"}
MODES = {
    "task1": (("task1.yaml",), "Deployment", "billing", "billing"),
    "task2": (("task2.yaml",), "StatefulSet", "billing-stateful", "billing-stateful"),
}


def pod_template(r, kind="Deployment", name="billing"):
    return r.get(kind, name)["spec"]["template"]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------ defaults


@pytest.mark.parametrize("mode", sorted(MODES))
def test_defaults_annotate_the_pods_for_scraping_and_enable_metrics(helm, mode):
    values, kind, name, _ = MODES[mode]
    r = render(helm, values=values)
    tpl = pod_template(r, kind, name)
    assert tpl["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    billing = container(tpl["spec"], "billing")
    assert env_of(billing)["METRICS_ENABLED"] == {"name": "METRICS_ENABLED", "value": "true"}
    # the annotated port is the container port the Services name "http"
    assert billing["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert not r.all("ServiceMonitor")
    assert not [c for c in r.all("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]


def test_every_billing_service_names_its_port_http(helm):
    for values in (("task1.yaml",), ("task2.yaml",)):
        r = render(helm, values=values)
        billing_services = [s for s in r.all("Service") if s["metadata"]["name"].startswith("billing") and "postgresql" not in s["metadata"]["name"]]
        assert billing_services
        for svc in billing_services:
            assert [(p["name"], p["targetPort"]) for p in svc["spec"]["ports"]] == [("http", "http")], svc["metadata"]["name"]


def test_scrape_annotation_port_follows_config_port(helm):
    r = render(helm, sets={"config.port": "9090", "service.port": "80"})
    assert pod_template(r)["metadata"]["annotations"]["prometheus.io/port"] == "9090"


def test_scrape_annotations_can_be_turned_off_keeping_pod_annotations(helm):
    r = render(helm, sets={"metrics.scrapeAnnotations": "false", "podAnnotations.team": "payments"})
    assert pod_template(r)["metadata"]["annotations"] == {"team": "payments"}
    r = render(helm, sets={"metrics.scrapeAnnotations": "false"})
    assert "annotations" not in pod_template(r)["metadata"]


def test_pod_annotations_are_merged_and_win_over_the_chart(helm):
    r = render(helm, "--set-string", "podAnnotations.prometheus\\.io/path=/other", sets={"podAnnotations.team": "payments"})
    assert pod_template(r)["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/other",
        "team": "payments",
    }


def test_metrics_disabled_sets_the_env_and_drops_the_annotations(helm):
    r = render(helm, values=("task2.yaml",), sets={"metrics.enabled": "false"})
    tpl = pod_template(r, "StatefulSet", "billing-stateful")
    assert "annotations" not in tpl["metadata"]
    assert env_of(container(tpl["spec"], "billing"))["METRICS_ENABLED"]["value"] == "false"


# ------------------------------------------------------------------ ServiceMonitor


@pytest.mark.parametrize("mode", sorted(MODES))
def test_service_monitor_scrapes_each_pod_once_through_one_named_port(helm, mode):
    values, kind, workload, target_service = MODES[mode]
    r = render(helm, values=values, sets=SM_ON)
    [sm] = r.all("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["name"] == "billing"
    assert sm["metadata"]["namespace"] == "default"
    labels = sm["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "billing"
    assert labels["app.kubernetes.io/instance"] == "billing"
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
    spec = sm["spec"]
    assert spec["namespaceSelector"] == {"matchNames": ["default"]}
    assert spec["endpoints"] == [
        {"port": "http", "path": "/metrics", "scheme": "http", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    # Exactly one Service matches (in StatefulSet mode both Services select the
    # same pods: matching both would scrape every pod twice).
    matched = [s for s in r.all("Service") if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in matched] == [target_service]
    svc = matched[0]
    assert "http" in [p["name"] for p in svc["spec"]["ports"]]
    # ... and that Service selects the billing pods, whose container port is "http"
    tpl = pod_template(r, kind, workload)
    assert selects(svc["spec"]["selector"], tpl["metadata"]["labels"])
    assert [p["name"] for p in container(tpl["spec"], "billing")["ports"]] == ["http"]


def test_service_monitor_settings_and_labels(helm):
    r = render(
        helm,
        values=("task2.yaml",),
        sets={
            **SM_ON,
            "metrics.serviceMonitor.interval": "1m30s",
            "metrics.serviceMonitor.scrapeTimeout": "90s",
            "metrics.serviceMonitor.labels.release": "prometheus",
            "commonLabels.team": "payments",
        },
    )
    [sm] = r.all("ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["interval"] == "1m30s"
    assert sm["spec"]["endpoints"][0]["scrapeTimeout"] == "90s"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["metadata"]["labels"]["team"] == "payments"


def test_service_monitor_in_statefulset_mode_needs_no_clusterip_service(helm):
    r = render(helm, values=("task2.yaml",), sets={**SM_ON, "service.enabled": "false"})
    [sm] = r.all("ServiceMonitor")
    matched = [s["metadata"]["name"] for s in r.all("Service") if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert matched == ["billing-stateful"]


def test_service_monitor_off_leaves_the_services_labels_alone(helm):
    for values in (("task1.yaml",), ("task2.yaml",)):
        r = render(helm, values=values)
        for svc in r.all("Service"):
            assert "billing/metrics-target" not in svc["metadata"]["labels"]


# ------------------------------------------------------------------ dashboard


def test_dashboard_configmap_in_the_sidecar_convention(helm):
    r = render(helm, values=("task2.yaml",), sets=DASH_ON)
    cm = r.get("ConfigMap", "billing-dashboard")
    assert cm["metadata"]["namespace"] == "default"
    labels = cm["metadata"]["labels"]
    assert labels["grafana_dashboard"] == "1"
    assert labels["app.kubernetes.io/name"] == "billing"
    assert labels["app.kubernetes.io/instance"] == "billing"
    assert "annotations" not in cm["metadata"]
    assert list(cm["data"]) == ["billing.json"]
    dashboard = json.loads(cm["data"]["billing.json"])
    assert dashboard["uid"] == "billing-overview"
    titles = [p["title"] for p in dashboard["panels"] if p["type"] != "row"]
    for wanted in (
        "Requests per second by route and status",
        "Latency p50 and p99 by route",
        "Payments created per second",
        "Payments refused per second by reason",
        "Database errors per second by kind",
        "Connection pool",
        "Transaction-log lines per second",
        "Transaction-log lines queued",
    ):
        assert wanted in titles
    # every query goes to the dashboard's data-source variable, not a named data source
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_dashboard_is_the_chart_file_verbatim(helm):
    from conftest import CHART

    r = render(helm, sets=DASH_ON)
    assert r.get("ConfigMap", "billing-dashboard")["data"]["billing.json"] == (CHART / "dashboards" / "billing.json").read_text().rstrip("\n")


def test_dashboard_label_and_annotations_are_configurable(helm):
    r = render(
        helm,
        sets={
            **DASH_ON,
            "metrics.dashboard.labelKey": "grafana.example.com/dashboard",
            "metrics.dashboard.labelValue": "billing",
            "metrics.dashboard.annotations.grafana_folder": "Billing",
        },
    )
    cm = r.get("ConfigMap", "billing-dashboard")
    assert cm["metadata"]["labels"]["grafana.example.com/dashboard"] == "billing"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Billing"}


def test_dashboard_label_value_may_be_empty(helm):
    r = render(helm, "--set-string", "metrics.dashboard.labelValue=", sets=DASH_ON)
    assert r.get("ConfigMap", "billing-dashboard")["metadata"]["labels"]["grafana_dashboard"] == ""


# ------------------------------------------------------------------ refusals (template checks)

REFUSALS = [
    (
        "service-monitor-without-metrics",
        {**SM_ON, "metrics.enabled": "false"},
        "metrics.serviceMonitor.enabled is true but metrics.enabled is false",
    ),
    (
        "dashboard-without-metrics",
        {**DASH_ON, "metrics.enabled": "false"},
        "metrics.dashboard.enabled is true but metrics.enabled is false",
    ),
    (
        "service-monitor-deployment-without-service",
        {**SM_ON, "service.enabled": "false"},
        "metrics.serviceMonitor.enabled is true but service.enabled is false",
    ),
    (
        "timeout-longer-than-interval",
        {**SM_ON, "metrics.serviceMonitor.interval": "1m", "metrics.serviceMonitor.scrapeTimeout": "61s"},
        "metrics.serviceMonitor.scrapeTimeout (61s) is longer than metrics.serviceMonitor.interval (1m)",
    ),
    (
        "units-out-of-order",
        {**SM_ON, "metrics.serviceMonitor.interval": "30s1m"},
        'metrics.serviceMonitor.interval is "30s1m", which Prometheus does not read as a duration',
    ),
    (
        "zero-interval",
        {**SM_ON, "metrics.serviceMonitor.interval": "0s", "metrics.serviceMonitor.scrapeTimeout": "0s"},
        'metrics.serviceMonitor.interval is "0s", which is no time at all',
    ),
]


@pytest.mark.parametrize(("sets", "says"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_contradictory_metrics_settings_are_refused(helm, sets, says):
    args: list[str] = []
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    err = render_error(helm, *args)
    assert says in err, err


def test_timeout_equal_to_interval_is_accepted(helm):
    r = render(helm, sets={**SM_ON, "metrics.serviceMonitor.interval": "1m", "metrics.serviceMonitor.scrapeTimeout": "60s"})
    assert r.all("ServiceMonitor")


# ------------------------------------------------------------------ refusals (schema)

SCHEMA_REFUSALS = [
    (
        "interval-with-words",
        ["--set", "metrics.serviceMonitor.interval=30 seconds"],
        "metrics.serviceMonitor.interval: Does not match pattern '^([0-9]+(ms|s|m|h|d|w|y))+$'",
        "at '/metrics/serviceMonitor/interval': '30 seconds' does not match pattern '^([0-9]+(ms|s|m|h|d|w|y))+$'",
    ),
    (
        "interval-with-decimals",
        ["--set", "metrics.serviceMonitor.interval=1.5m"],
        "metrics.serviceMonitor.interval: Does not match pattern",
        "at '/metrics/serviceMonitor/interval': '1.5m' does not match pattern",
    ),
    (
        "empty-scrape-timeout",
        ["--set", "metrics.serviceMonitor.scrapeTimeout="],
        "metrics.serviceMonitor.scrapeTimeout: String length must be greater than or equal to 2",
        "at '/metrics/serviceMonitor/scrapeTimeout': minLength: got 0, want 2",
    ),
    (
        "metrics-enabled-not-boolean",
        ["--set-string", "metrics.enabled=yes"],
        "metrics.enabled: Invalid type. Expected: boolean, given: string",
        "at '/metrics/enabled': got string, want boolean",
    ),
    (
        "label-value-not-a-string",
        ["--set", "metrics.serviceMonitor.labels.tier=1"],
        "metrics.serviceMonitor.labels.tier: Invalid type. Expected: string, given: integer",
        "at '/metrics/serviceMonitor/labels/tier': got number, want string",
    ),
    (
        "dashboard-label-key-with-space",
        ["--set", "metrics.dashboard.labelKey=grafana dashboard"],
        "metrics.dashboard.labelKey: Does not match pattern",
        "at '/metrics/dashboard/labelKey': 'grafana dashboard' does not match pattern",
    ),
    (
        "dashboard-label-value-leading-dash",
        ["--set", "metrics.dashboard.labelValue=-x"],
        "metrics.dashboard.labelValue: Does not match pattern",
        "at '/metrics/dashboard/labelValue': '-x' does not match pattern",
    ),
    (
        "misspelt-key",
        ["--set", "metrics.serviceMonitor.intervall=1m"],
        "metrics.serviceMonitor: Additional property intervall is not allowed",
        "at '/metrics/serviceMonitor': additional properties 'intervall' not allowed",
    ),
    (
        "unknown-metrics-key",
        ["--set", "metrics.port=9100"],
        "metrics: Additional property port is not allowed",
        "at '/metrics': additional properties 'port' not allowed",
    ),
]


@pytest.mark.parametrize(("args", "helm3_says", "helm4_says"), [r[1:] for r in SCHEMA_REFUSALS], ids=[r[0] for r in SCHEMA_REFUSALS])
def test_bad_metrics_values_are_refused_by_the_schema(helm, args, helm3_says, helm4_says):
    err = render_error(helm, *args)
    assert "values don't meet the specifications of the schema" in err
    expected = helm3_says if helm == "helm3" else helm4_says
    assert expected in err, err
