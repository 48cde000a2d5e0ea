"""Writes tests/chart/cnpg-cluster-v1.30.0.schema.json: the openAPIV3Schema of
CloudNativePG's postgresql.cnpg.io/v1 Cluster from the operator's release
manifest, cut down to the fields the chart renders (descriptions dropped), for
test_cnpg.py to validate the rendered Cluster against. Vendored so that the
tests need neither the network nor the Go module cache; rerun it when the
chart moves to another CloudNativePG release:

  .tools/venv/bin/python tests/chart/extract_cnpg_schema.py \
      ~/go/pkg/mod/github.com/cloudnative-pg/cloudnative-pg@v1.30.0/releases/cnpg-1.30.0.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

VERSION = "1.30.0"
OUT = Path(__file__).with_name(f"cnpg-cluster-v{VERSION}.schema.json")
# The Cluster fields the chart renders (spec.<key>); the schema of each is kept whole.
SPEC_KEYS = ("instances", "imageName", "imagePullPolicy", "enableSuperuserAccess", "smartShutdownTimeout", "storage",
             "postgresql", "resources", "bootstrap", "externalClusters")


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(manifest: str) -> None:
    for doc in yaml.safe_load_all(Path(manifest).read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition" and doc["spec"]["names"]["kind"] == "Cluster":
            (v1,) = [v for v in doc["spec"]["versions"] if v["name"] == "v1"]
            schema = v1["schema"]["openAPIV3Schema"]
            break
    else:
        raise SystemExit(f"no Cluster CRD in {manifest}")
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


if __name__ == "__main__":
    main(sys.argv[1])
