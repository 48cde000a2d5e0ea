"""Every PromQL expression of the chart's Grafana dashboard asks only for
metrics that billing really exports.

The expressions are parsed by Prometheus' own PromQL parser (the Go program in
tests/chart/promql, built from the Go module github.com/prometheus/prometheus),
and the exported names are scraped from the real billing binary
(target/debug/billing) serving a real PostgreSQL (target/debug/billing-tempdb)
after real requests, including refused payments and a database outage, so that
the labelled counters exist too; the exposition is parsed by the Prometheus
Python client's parser. Nothing here is skipped: a missing binary, Go or
prometheus_client fails the test and says how to get it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import CHART, ROOT

DASHBOARD = CHART / "dashboards" / "billing.json"
PROMQL_TOOL = ROOT / "tests" / "chart" / "promql"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
BUILD_HINT = "cargo build --locked -p billing -p billing-testkit --bins (scripts/check-chart.sh does it)"

# Labels a Prometheus scrape adds to every series (the e2e's kubernetes_sd
# relabelling and the Prometheus Operator both set these), not billing.
TARGET_LABELS = {"namespace", "pod"}
# Sample values for Grafana's variables, so that the expressions are PromQL.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "namespace": "billing",
    "pod": ".*",
}
# What the dashboard must show (issue 12): one name per panel subject.
REQUIRED_NAMES = {
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "billing_payments_created_total",
    "billing_payments_refused_total",
    "billing_database_errors_total",
    "billing_db_pool_connections",
    "billing_db_pool_idle_connections",
    "billing_db_pool_waiting_requests",
    "billing_txlog_lines_written_total",
    "billing_txlog_lines_failed_total",
    "billing_txlog_lines_dropped_total",
    "billing_txlog_lines_queued",
}


# ------------------------------------------------------------------ the dashboard's expressions


def _panels(panels):
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every panel target and every query variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        # Grafana's label_values(<series selector>, <label>) is not PromQL; its selector is.
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
        assert m, f"variable {var['name']}: unsupported query {query!r}"
        found.append((f"variable {var['name']} (label {m.group(2)})", m.group(1)))
    return found


def substitute(expr: str) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr!r}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


# ------------------------------------------------------------------ the PromQL parser


@pytest.fixture(scope="module")
def promql_tool(tmp_path_factory) -> Path:
    go = shutil.which("go")
    if not go:
        pytest.fail("go is not on PATH: the PromQL check builds tests/chart/promql with Go (install Go 1.26)", pytrace=False)
    out = tmp_path_factory.mktemp("promql") / "promql-names"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly -trimpath", "CGO_ENABLED": "0"}
    proc = subprocess.run([go, "build", "-o", str(out), "."], cwd=PROMQL_TOOL, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"go build of tests/chart/promql failed:\n{proc.stderr}", pytrace=False)
    return out


def parse(tool: Path, exprs: list[str]) -> list[dict]:
    proc = subprocess.run([str(tool)], input=json.dumps(exprs), capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    results = json.loads(proc.stdout)
    assert [r["expr"] for r in results] == exprs
    return results


# ------------------------------------------------------------------ the real billing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(base: str, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> int:
    req = urllib.request.Request(base + path, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def _binary(name: str) -> Path:
    path = TARGET / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build it with {BUILD_HINT}", pytrace=False)
    return path


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> dict:
    """Starts PostgreSQL and billing, sends real requests (and takes the
    database away for one), scrapes GET /metrics; returns {"families": parsed
    families, "labels": {sample name: label names}, "sent": what was sent}."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        pytest.fail("prometheus_client is missing: run scripts/install-tools.sh (scripts/requirements-tools.txt pins it)", pytrace=False)
    billing, tempdb = _binary("billing"), _binary("billing-tempdb")
    work = tmp_path_factory.mktemp("billing")
    procs: list[subprocess.Popen] = []

    def stop(p: subprocess.Popen) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    try:
        db_out = open(work / "tempdb.out", "w+")
        db_err = open(work / "tempdb.err", "w+")
        db = subprocess.Popen([str(tempdb)], stdout=db_out, stderr=db_err)
        procs.append(db)
        url = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and url is None:
            db_out.seek(0)
            for line in db_out.read().splitlines():
                if line.startswith("DATABASE_URL="):
                    url = line.split("=", 1)[1]
            if db.poll() is not None:
                break
            time.sleep(0.1)
        if url is None:
            db_err.seek(0)
            pytest.fail(f"billing-tempdb gave no DATABASE_URL (is PostgreSQL installed? scripts/install-postgres.sh):\n{db_err.read()}", pytrace=False)

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "LISTEN_ADDR": f"127.0.0.1:{port}",
            "LOG_FILE": str(work / "log" / "app.log"),
            "DATABASE_TIMEOUT_SECS": "2",
            "METRICS_ENABLED": "true",
            "RUST_LOG": "warn",
        }
        log = open(work / "billing.log", "w+")
        app = subprocess.Popen([str(billing)], env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(app)
        deadline = time.monotonic() + 60
        while True:
            if app.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"billing did not become ready:\n{log.read()}", pytrace=False)
            try:
                if _request(base, "GET", "/readyz") == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)

        sent = [
            ("GET", "/ping", None, None, 200),
            ("GET", "/healthz", None, None, 200),
            ("POST", "/add?client_id=1&amount=1000", None, None, 201),
            ("POST", "/add", b'{"client_id":"2","amount":250}', "application/json", 201),
            ("POST", "/add?client_id=1&amount=-5", None, None, 400),  # invalid_field
            ("POST", "/add", b"{not json", "application/json", 400),  # bad_request
            ("POST", "/add", b"<add/>", "text/xml", 415),  # unsupported_media_type
            ("POST", "/add", b"client_id=" + b"x" * 17000, "application/x-www-form-urlencoded", 413),  # payload_too_large
            ("GET", "/get/1", None, None, 200),
            ("GET", "/get/999999", None, None, 404),
            ("GET", "/get/abc", None, None, 400),
            ("GET", "/getall", None, None, 200),
            ("GET", "/no/such/path", None, None, 404),
            ("DELETE", "/ping", None, None, 405),
        ]
        for method, path, body, ctype, want in sent:
            got = _request(base, method, path, body, ctype)
            assert got == want, f"{method} {path}: {got}, expected {want}"
        # The database goes away: a payment now fails with 503, counted as a database error.
        stop(db)
        for method, path in (("POST", "/add?client_id=3&amount=30"), ("GET", "/readyz")):
            got = _request(base, method, path)
            assert got == 503, f"{method} {path} without a database: {got}, expected 503"
        with urllib.request.urlopen(base + "/metrics", timeout=15) as resp:
            assert resp.status == 200
            text = resp.read().decode()
        (work / "metrics.txt").write_text(text)
        families = list(text_string_to_metric_families(text))
        labels: dict[str, set[str]] = {}
        for fam in families:
            for s in fam.samples:
                labels.setdefault(s.name, set()).update(s.labels)
        return {"families": families, "labels": labels, "text": text}
    finally:
        for p in reversed(procs):
            stop(p)


def _value(scraped: dict, name: str, **match) -> float:
    return sum(
        s.value
        for fam in scraped["families"]
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
    )


def check_names(results: list[dict], exported: dict[str, set[str]]) -> list[str]:
    """Problems: parse errors, names billing does not export, labels that
    neither billing nor the scrape puts on those names."""
    problems = []
    for r in results:
        if r.get("error"):
            problems.append(f"{r['expr']!r}: {r['error']}")
            continue
        missing = [n for n in r["names"] if n not in exported]
        if missing:
            problems.append(f"{r['expr']!r}: billing exports no {', '.join(missing)}")
            continue
        known = set(TARGET_LABELS).union(*(exported[n] for n in r["names"]))
        unknown = [label for label in r.get("labels", []) if label not in known]
        if unknown:
            problems.append(f"{r['expr']!r}: no series of {', '.join(r['names'])} has label {', '.join(unknown)}")
    return problems


# ------------------------------------------------------------------ tests


def test_the_scrape_is_real_and_counts_what_was_sent(scraped):
    assert _value(scraped, "billing_payments_created_total") == 2
    assert _value(scraped, "billing_payments_refused_total") == 4
    for reason in ("invalid_field", "bad_request", "payload_too_large", "unsupported_media_type"):
        assert _value(scraped, "billing_payments_refused_total", reason=reason) == 1, reason
    assert _value(scraped, "billing_database_errors_total") >= 1
    assert _value(scraped, "http_requests_total", method="POST", route="/add", status="201") == 2
    assert _value(scraped, "billing_txlog_lines_written_total") == 2


def test_every_dashboard_expression_uses_only_metrics_billing_exports(scraped, promql_tool):
    where = dashboard_expressions()
    assert len(where) >= 20
    results = parse(promql_tool, [substitute(e) for _, e in where])
    problems = [f"{w}: {p}" for (w, _), r in zip(where, results) for p in check_names([r], scraped["labels"])]
    assert not problems, "\n".join(problems)


def test_the_dashboard_shows_every_subject_of_the_issue(promql_tool):
    results = parse(promql_tool, [substitute(e) for _, e in dashboard_expressions()])
    used = {n for r in results for n in r.get("names", [])}
    assert REQUIRED_NAMES <= used, sorted(REQUIRED_NAMES - used)


def test_the_check_catches_wrong_names_labels_and_syntax(scraped, promql_tool):
    """The comparison is not vacuous: a name billing does not export, a label it
    does not set and a malformed expression are each reported."""
    bad = [
        "sum(rate(billing_payments_total[5m]))",
        "sum by (currency) (rate(billing_payments_created_total[5m]))",
        "sum(rate(http_requests_total[5m])",
    ]
    problems = check_names(parse(promql_tool, bad), scraped["labels"])
    assert len(problems) == 3, problems
    assert "billing exports no billing_payments_total" in problems[0]
    assert "has label currency" in problems[1]
    assert "parse error" in problems[2]
