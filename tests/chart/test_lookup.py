"""The two templates that read the cluster through Helm's `lookup`, against a
fake API server on loopback (fake_apiserver.py), with
`helm template --dry-run=server`, which performs lookups but changes nothing:

- the PostgreSQL password is read back from the existing Secret, so an
  upgrade never changes it under the data;
- a StorageClass of the chart's name that belongs to someone else stops the
  install with an explanation instead of being taken over.
"""

from __future__ import annotations

import base64

import pytest
import yaml
from conftest import CHART, run_helm
from fake_apiserver import FakeApiServer


@pytest.fixture
def cluster(tmp_path):
    with FakeApiServer() as api:
        api.kubeconfig_path = str(api.kubeconfig(tmp_path))
        yield api


def template(helm, cluster, *args):
    # The fake serves no OpenAPI document for Helm 4's validation of the
    # objects; kubernetes-validate does that job in scripts/check-chart.sh.
    return run_helm(
        helm,
        "template", "billing", str(CHART), "--namespace", "default", "--dry-run=server",
        "--disable-openapi-validation", *args,
        kubeconfig=cluster.kubeconfig_path,
    )


def secret_password(stdout: str) -> str:
    for doc in yaml.safe_load_all(stdout):
        if doc and doc["kind"] == "Secret" and doc["metadata"]["name"] == "billing-postgresql":
            return base64.b64decode(doc["data"]["password"]).decode()
    raise AssertionError("no Secret billing-postgresql rendered")


def test_existing_password_is_kept_on_upgrade(helm, cluster):
    cluster.add_secret("default", "billing-postgresql", {"password": base64.b64encode(b"the-old-one").decode()}, owner=("billing", "default"))
    for values in ("values/task1.yaml", "values/task2.yaml"):
        proc = template(helm, cluster, "-f", str(CHART.parents[1] / values))
        assert proc.returncode == 0, proc.stderr
        assert secret_password(proc.stdout) == "the-old-one"
    # It really asked the API server for the Secret.
    assert any("/secrets/billing-postgresql" in r for r in cluster.requests)


def test_new_install_generates_a_password(helm, cluster):
    proc = template(helm, cluster)
    assert proc.returncode == 0, proc.stderr
    assert len(secret_password(proc.stdout)) == 32


def test_explicit_password_wins_over_the_stored_one(helm, cluster):
    cluster.add_secret("default", "billing-postgresql", {"password": base64.b64encode(b"the-old-one").decode()}, owner=("billing", "default"))
    proc = template(helm, cluster, "--set", "postgresql.auth.password=new-one")
    assert proc.returncode == 0, proc.stderr
    assert secret_password(proc.stdout) == "new-one"


def test_own_storage_class_is_updated_in_place(helm, cluster):
    cluster.add_storage_class(
        "billing-retain",
        owner=("billing", "default"),
    )
    proc = template(helm, cluster)
    assert proc.returncode == 0, proc.stderr


def test_storage_class_of_another_release_is_refused_with_advice(helm, cluster):
    cluster.add_storage_class(
        "billing-retain",
        owner=("billing", "staging"),
    )
    proc = template(helm, cluster)
    assert proc.returncode != 0
    err = proc.stderr
    assert 'StorageClass "billing-retain" already exists and belongs to Helm release "billing" in namespace "staging"' in err
    assert "--set storageClass.create=false --set storageClass.name=billing-retain" in err
    assert "--set storageClass.name=<new-name>" in err


def test_storage_class_made_by_hand_is_refused(helm, cluster):
    cluster.add_storage_class("billing-retain")
    proc = template(helm, cluster)
    assert proc.returncode != 0
    assert "belongs to no Helm release (created by hand or by another tool)" in proc.stderr


def test_sharing_an_existing_storage_class_is_allowed(helm, cluster):
    cluster.add_storage_class(
        "billing-retain",
        owner=("billing", "staging"),
    )
    proc = template(helm, cluster, "--set", "storageClass.create=false", "--set", "storageClass.name=billing-retain")
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert not [d for d in docs if d["kind"] == "StorageClass"]
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["storageClassName"] == "billing-retain"
