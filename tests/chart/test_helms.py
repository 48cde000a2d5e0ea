"""Helm 3 and Helm 4 render the same objects from this chart, so the checks
that render with one of them only (the combinations in
scripts/check-chart.sh) hold for both."""

from __future__ import annotations

import pytest
from conftest import render

CASES = {
    "default": {"values": ()},
    "task1": {"values": ("task1.yaml",)},
    "task2": {"values": ("task2.yaml",)},
    "task2-kind": {"values": ("task2.yaml", "kind.yaml")},
    "external-db-networkpolicy": {
        "values": ("task2.yaml",),
        "sets": {
            "postgresql.enabled": "false",
            "externalDatabase.url": "postgres://billing@db:5432/billing",
            "externalDatabase.password": "pw",
            "networkPolicy.enabled": "true",
        },
    },
    "task1-metrics-all-on": {
        "values": ("task1.yaml",),
        "sets": {"metrics.serviceMonitor.enabled": "true", "metrics.dashboard.enabled": "true"},
    },
    "task2-metrics-all-on": {
        "values": ("task2.yaml",),
        "sets": {
            "metrics.serviceMonitor.enabled": "true",
            "metrics.serviceMonitor.labels.release": "prometheus",
            "metrics.dashboard.enabled": "true",
        },
    },
    "metrics-off": {"values": ("task2.yaml",), "sets": {"metrics.enabled": "false"}},
    "no-storageclass-no-service": {
        "values": ("task2.yaml",),
        "sets": {"storageClass.create": "false", "service.enabled": "false", "networkPolicy.enabled": "true"},
    },
}
FIXED_PASSWORD = {"postgresql.auth.password": "same-for-both", "postgresql.auth.superuser.password": "also-the-same"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_helm3_and_helm4_render_the_same_objects(case):
    spec = CASES[case]
    sets = {**FIXED_PASSWORD, **spec.get("sets", {})}
    helm3 = render("helm3", values=spec["values"], sets=sets)
    helm4 = render("helm4", values=spec["values"], sets=sets)
    assert helm3.names() == helm4.names()
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(helm3.docs, key=key) == sorted(helm4.docs, key=key)
