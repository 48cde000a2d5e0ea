"""Writes tests/chart/cnpg-cluster-v1.30.0.schema.json: the openAPIV3Schema of
CloudNativePG's postgresql.cnpg.io/v1 Cluster from the operator's release
manifest, cut down to the fields the chart renders (descriptions dropped), for
test_cnpg.py to validate the rendered Cluster against; and, whole, that of its
ScheduledBackup (cnpg-scheduledbackup-v1.30.0.schema.json) and of the Barman
Cloud plugin's barmancloud.cnpg.io/v1 ObjectStore
(barmancloud-objectstore-v0.14.0.schema.json, from the plugin module's
config/crd/bases; v0.15.0's differs only in one description), for
test_cnpg_backup.py. Vendored so that the tests need neither the network nor
the Go module cache; rerun it when the chart moves to another CloudNativePG or
plugin release:

  .tools/venv/bin/python tests/chart/extract_cnpg_schema.py \
      ~/go/pkg/mod/github.com/cloudnative-pg/cloudnative-pg@v1.30.0/releases/cnpg-1.30.0.yaml \
      ~/go/pkg/mod/github.com/cloudnative-pg/plugin-barman-cloud@v0.14.0/config/crd/bases/barmancloud.cnpg.io_objectstores.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

VERSION = "1.30.0"
PLUGIN_VERSION = "0.14.0"
OUT = Path(__file__).with_name(f"cnpg-cluster-v{VERSION}.schema.json")
OUT_SCHEDULED_BACKUP = Path(__file__).with_name(f"cnpg-scheduledbackup-v{VERSION}.schema.json")
OUT_OBJECT_STORE = Path(__file__).with_name(f"barmancloud-objectstore-v{PLUGIN_VERSION}.schema.json")
# The Cluster fields the chart renders (spec.<key>); the schema of each is kept whole.
SPEC_KEYS = ("instances", "imageName", "imagePullPolicy", "enableSuperuserAccess", "smartShutdownTimeout", "storage",
             "postgresql", "resources", "bootstrap", "externalClusters", "backup", "plugins")


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def crd_schema(path: str, kind: str) -> dict:
    """The v1 openAPIV3Schema of the CRD of `kind` in the YAML file at path."""
    for doc in yaml.safe_load_all(Path(path).read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] == kind:
            (v1,) = [v for v in doc["spec"]["versions"] if v["name"] == "v1"]
            return v1["schema"]["openAPIV3Schema"]
    raise SystemExit(f"no {kind} CRD in {path}")


def write_whole(out: Path, comment: str, schema: dict) -> None:
    whole = {"$comment": comment, **schema}
    whole["properties"] = {**schema["properties"], "metadata": {"type": "object"}}
    whole["properties"].pop("status", None)
    out.write_text(json.dumps(strip(whole), indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


def main(manifest: str, object_store_crd: str) -> None:
    schema = crd_schema(manifest, "Cluster")
    spec = schema["properties"]["spec"]
    kept = {
        "$comment": f"CloudNativePG {VERSION}, releases/cnpg-{VERSION}.yaml, CRD clusters.postgresql.cnpg.io, version v1, "
        f"openAPIV3Schema cut to spec.{{{','.join(SPEC_KEYS)}}} by tests/chart/extract_cnpg_schema.py",
        "type": "object",
        "required": schema.get("required", []),
        "properties": {
            "apiVersion": schema["properties"]["apiVersion"],
            "kind": schema["properties"]["kind"],
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": spec.get("required", []),
                "properties": {k: spec["properties"][k] for k in SPEC_KEYS},
            },
        },
    }
    OUT.write_text(json.dumps(strip(kept), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    write_whole(OUT_SCHEDULED_BACKUP, f"CloudNativePG {VERSION}, releases/cnpg-{VERSION}.yaml, CRD "
                "scheduledbackups.postgresql.cnpg.io, version v1, openAPIV3Schema without status, by "
                "tests/chart/extract_cnpg_schema.py", crd_schema(manifest, "ScheduledBackup"))
    write_whole(OUT_OBJECT_STORE, f"plugin-barman-cloud v{PLUGIN_VERSION}, config/crd/bases/"
                "barmancloud.cnpg.io_objectstores.yaml, version v1, openAPIV3Schema without status, by "
                "tests/chart/extract_cnpg_schema.py", crd_schema(object_store_crd, "ObjectStore"))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: extract_cnpg_schema.py <cnpg-VERSION.yaml> <barmancloud.cnpg.io_objectstores.yaml>")
    main(sys.argv[1], sys.argv[2])
