#!/usr/bin/env python3
"""Turns the chart's rendered PrometheusRule into a Prometheus rule file.

    rule_file.py RENDERED.yaml [--without-annotations] > rules.yaml

RENDERED.yaml is `helm template` output (any number of documents); the rule
file is the `spec` of its one PrometheusRule (`groups: [...]`), which is the
format `promtool check rules`, `promtool test rules` and Prometheus' own
rule_files read. --without-annotations drops the alerts' annotations, for
unit tests that assert on labels and timing only. Exits 1 with a message
when there is not exactly one PrometheusRule.
"""

from __future__ import annotations

import sys

import yaml


def rule_file(rendered: str, without_annotations: bool = False) -> str:
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        raise SystemExit(f"rule_file.py: expected one PrometheusRule in the rendered chart, found {len(rules)}")
    spec = rules[0]["spec"]
    if without_annotations:
        for group in spec["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    return yaml.safe_dump(spec, sort_keys=False, width=1000)


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    flags = {a for a in argv if a.startswith("--")}
    if len(args) != 1 or not flags <= {"--without-annotations"}:
        raise SystemExit(__doc__)
    with open(args[0], encoding="utf-8") as f:
        sys.stdout.write(rule_file(f.read(), "--without-annotations" in flags))


if __name__ == "__main__":
    main(sys.argv[1:])
