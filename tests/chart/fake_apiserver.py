"""A tiny stand-in for the Kubernetes API, on 127.0.0.1, for the templates
that call Helm's `lookup`: just enough discovery for Helm to find Secrets and
StorageClasses, and GETs of the objects a test puts in it. Read-only: Helm is
run with `template --dry-run=server`, which reads the cluster and writes
nothing.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

def _resource(name: str, kind: str, namespaced: bool = True) -> dict:
    return {"name": name, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": ["get", "list"]}


# Discovery of every kind the chart renders: Helm 4 maps each rendered object
# to its resource before a server-side dry run.
RESOURCES = {
    "/api/v1": [
        _resource("secrets", "Secret"),
        _resource("services", "Service"),
        _resource("persistentvolumeclaims", "PersistentVolumeClaim"),
        _resource("pods", "Pod"),
        _resource("configmaps", "ConfigMap"),
    ],
    "/apis/apps/v1": [_resource("deployments", "Deployment"), _resource("statefulsets", "StatefulSet")],
    "/apis/storage.k8s.io/v1": [_resource("storageclasses", "StorageClass", namespaced=False)],
    "/apis/networking.k8s.io/v1": [_resource("networkpolicies", "NetworkPolicy")],
    "/apis/policy/v1": [_resource("poddisruptionbudgets", "PodDisruptionBudget")],
    "/apis/batch/v1": [_resource("jobs", "Job")],
    "/apis/autoscaling/v2": [_resource("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
    # CloudNativePG mode renders only where the operator's CRD is served.
    "/apis/postgresql.cnpg.io/v1": [_resource("clusters", "Cluster"), _resource("scheduledbackups", "ScheduledBackup")],
    # Its backups through the Barman Cloud plugin, likewise.
    "/apis/barmancloud.cnpg.io/v1": [_resource("objectstores", "ObjectStore")],
}
VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}


class FakeApiServer:
    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0].rstrip("/")
                server.requests.append(self.path)
                if path == "/version":
                    return self._send(200, VERSION)
                if path == "/api":
                    return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
                if path == "/apis":
                    groups = []
                    for gv_path in RESOURCES:
                        if gv_path.startswith("/apis/"):
                            gv = gv_path.removeprefix("/apis/")
                            group, version = gv.split("/")
                            entry = {"groupVersion": gv, "version": version}
                            groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
                    return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
                if path in RESOURCES:
                    gv = path.removeprefix("/api/").removeprefix("/apis/")
                    return self._send(
                        200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": RESOURCES[path]}
                    )
                if path in server.objects:
                    return self._send(200, server.objects[path])
                if re.fullmatch(r"/api/v1/namespaces/[^/]+/secrets", path):
                    # Helm 3 and 4 list their release records (Secrets labelled owner=helm).
                    return self._send(200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []})
                return self._send(
                    404,
                    {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404},
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def _metadata(name: str, namespace: str | None, owner: tuple[str, str] | None) -> dict:
        """Metadata as Helm leaves it on the objects of release owner=(name, namespace)."""
        meta: dict = {"name": name, "labels": {}, "annotations": {}}
        if namespace:
            meta["namespace"] = namespace
        if owner:
            meta["labels"]["app.kubernetes.io/managed-by"] = "Helm"
            meta["annotations"]["meta.helm.sh/release-name"] = owner[0]
            meta["annotations"]["meta.helm.sh/release-namespace"] = owner[1]
        return meta

    def add_secret(self, namespace: str, name: str, data: dict[str, str], owner: tuple[str, str] | None = None) -> None:
        self.objects[f"/api/v1/namespaces/{namespace}/secrets/{name}"] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self._metadata(name, namespace, owner),
            "type": "Opaque",
            "data": data,
        }

    def add_storage_class(self, name: str, owner: tuple[str, str] | None = None) -> None:
        self.objects[f"/apis/storage.k8s.io/v1/storageclasses/{name}"] = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": self._metadata(name, None, owner),
            "provisioner": "k8s.io/minikube-hostpath",
            "reclaimPolicy": "Retain",
        }

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                    "users": [{"name": "fake", "user": {}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
                    "current-context": "fake",
                }
            )
        )
        return path
