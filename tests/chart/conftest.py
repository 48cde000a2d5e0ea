"""Shared helpers for the chart unit suite.

Everything is rendered by the real Helm binaries that scripts/install-tools.sh
puts in .tools/bin (Helm 3 and Helm 4), never by a re-implementation of Helm's
templating, so what is asserted here is what a user's `helm install` sends.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "billing"
VALUES = ROOT / "values"
TOOLS_BIN = ROOT / ".tools" / "bin"
HELMS = ("helm3", "helm4")
RELEASE = "billing"
NAMESPACE = "default"


def helm_path(name: str) -> Path:
    path = TOOLS_BIN / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run scripts/install-tools.sh first", pytrace=False)
    return path


@dataclass(frozen=True)
class Rendered:
    """The objects of one `helm template` run, with lookups by kind and name."""

    docs: tuple[dict, ...]

    def all(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)} in {self.names()}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(d["kind"] == kind and d["metadata"]["name"] == name for d in self.docs)

    def names(self) -> list[str]:
        return sorted(f"{d['kind']}/{d['metadata']['name']}" for d in self.docs)


def run_helm(helm: str, *args: str, kubeconfig: str = os.devnull) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Keep Helm away from any real cluster and any user configuration:
    # rendering must not depend on the machine. (test_lookup.py points it at
    # a fake API server on loopback instead.)
    env["KUBECONFIG"] = kubeconfig
    env.setdefault("HELM_CACHE_HOME", "/tmp/billing-chart-tests/helm-cache")
    env.setdefault("HELM_CONFIG_HOME", "/tmp/billing-chart-tests/helm-config")
    env.setdefault("HELM_DATA_HOME", "/tmp/billing-chart-tests/helm-data")
    return subprocess.run(
        [str(helm_path(helm)), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def values_file(name: str) -> str:
    return str(VALUES / name)


@functools.lru_cache(maxsize=None)
def _render(helm: str, args: tuple[str, ...]) -> Rendered:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    if proc.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed:\n{proc.stderr}")
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    return Rendered(docs)


def render(helm: str = "helm3", *args: str, values: tuple[str, ...] = (), sets: dict | None = None) -> Rendered:
    """helm template billing charts/billing [-f values/<v>]... [--set k=v]..."""
    full: list[str] = []
    for v in values:
        full += ["-f", values_file(v)]
    for key, value in (sets or {}).items():
        full += ["--set", f"{key}={value}"]
    full += list(args)
    return _render(helm, tuple(full))


def render_error(helm: str, *args: str) -> str:
    """Runs helm template expecting a failure; returns its stderr."""
    proc = run_helm(helm, "template", RELEASE, str(CHART), *args)
    assert proc.returncode != 0, f"helm template {' '.join(args)} unexpectedly succeeded"
    return proc.stderr


def notes(helm: str, *args: str, namespace: str = NAMESPACE) -> str:
    """NOTES.txt as `helm install` prints it. Only Helm 4 renders it without a
    cluster (`install --dry-run=client`); Helm 3 insists on reaching one."""
    proc = run_helm(helm, "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", namespace, *args)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "NOTES:" in out, out
    return out.split("NOTES:", 1)[1]


def container(pod_spec: dict, name: str) -> dict:
    found = [c for c in pod_spec["containers"] if c["name"] == name]
    assert len(found) == 1, [c["name"] for c in pod_spec["containers"]]
    return found[0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


@pytest.fixture(params=HELMS)
def helm(request) -> str:
    return request.param
