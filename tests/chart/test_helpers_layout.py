"""Where the chart's named templates live.

The helpers are split by concern into templates/_<concern>.tpl, so that a
reader finds a helper from its name: value checks in _checks.tpl, CloudNativePG
in _cnpg.tpl, and so on (RULES below, first match wins). These tests keep it
that way: every define is declared once (Helm silently keeps the last of two
defines of one name), every define of these files sits in the file its name
says, and every include and template call names a define that exists. A new
concern gets a file of its own (and a rule here once it has several helpers).
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import CHART

TEMPLATES = CHART / "templates"

# (pattern of the define's name, file it belongs in); first match wins.
RULES = (
    (r"billing\.(check\w+|postgresql\.checkRoles|cnpg\.check)", "_checks.tpl"),
    (r"billing\.cnpg\.\w+", "_cnpg.tpl"),
    (r"billing\.(podTemplate|logDir)", "_pod.tpl"),
    (r"billing\.(database\w+|postgresql\.(secret\w+|password|superuser\w+))", "_database.tpl"),
    (r"billing\.(podAnnotations|durationMs|metricsTargetLabel|prometheusRule\.\w+)", "_metrics.tpl"),
    (r"billing\.[\w.]+", "_names.tpl"),
)

DEFINE = re.compile(r"\{\{-?\s*define\s+\"([^\"]+)\"")
CALL = re.compile(r"\b(?:include|template)\s+\"([^\"]+)\"")


def template_files() -> list[Path]:
    return sorted(p for p in TEMPLATES.rglob("*") if p.is_file())


def defines() -> list[tuple[str, str]]:
    """(name, file) of every define in the chart's templates."""
    return [(m.group(1), p.name) for p in template_files() for m in DEFINE.finditer(p.read_text())]


def home(name: str) -> str:
    for pattern, file in RULES:
        if re.fullmatch(pattern, name):
            return file
    raise AssertionError(f"no rule in RULES places define {name!r}: add one")


def test_the_split_is_there_and_helpers_tpl_is_gone():
    assert not (TEMPLATES / "_helpers.tpl").exists()
    for file in ("_names.tpl", "_database.tpl", "_checks.tpl", "_pod.tpl", "_cnpg.tpl", "_metrics.tpl"):
        text = (TEMPLATES / file).read_text()
        assert text.startswith("{{/*"), f"{file} starts without the comment saying what it holds"
        assert DEFINE.search(text), f"{file} defines nothing"


def test_every_define_is_declared_once():
    seen: dict[str, list[str]] = {}
    for name, file in defines():
        seen.setdefault(name, []).append(file)
    twice = {name: files for name, files in seen.items() if len(files) > 1}
    assert twice == {}, f"defined more than once (Helm keeps only the last): {twice}"
    assert len(seen) >= 45


def test_every_define_is_in_the_file_its_name_says():
    split = {file for _, file in RULES}
    misplaced = [(name, file, home(name)) for name, file in defines() if file in split and file != home(name)]
    assert misplaced == [], "\n".join(f"{n} is in {f}, belongs in {h}" for n, f, h in misplaced)


def test_every_include_names_an_existing_define():
    defined = {name for name, _ in defines()}
    calls = {(m.group(1), p.name) for p in template_files() for m in CALL.finditer(p.read_text())}
    assert len(calls) > 50
    missing = sorted((name, file) for name, file in calls if name not in defined)
    assert missing == [], f"includes of undefined templates: {missing}"


def test_the_rules_are_not_vacuous():
    """Each rule places at least one real define, and a misplaced one is caught."""
    used = {home(name) for name, _ in defines()}
    assert used >= {"_checks.tpl", "_cnpg.tpl", "_pod.tpl", "_database.tpl", "_metrics.tpl", "_names.tpl"}
    assert home("billing.checkScaling") == "_checks.tpl" != "_names.tpl"
    assert home("billing.cnpg.clusterName") == "_cnpg.tpl"
