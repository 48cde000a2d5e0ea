"""The script of the `helm test` pod, run for real with /bin/sh and curl
against a stand-in of the billing API on loopback: it passes against an API
that is ready and refuses an invalid payment, stores nothing doing so, and
fails (non-zero, with a FAIL line) against one that is not ready or that
would store what it should refuse."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import container, render



@pytest.fixture(autouse=True)
def _curl():
    if shutil.which("curl") is None:
        pytest.fail("these tests run the helm test script with curl, which is not installed", pytrace=False)


class FakeBilling:
    """/ping, /readyz, POST /add, GET /get/<id>, like the service (amount must
    be > 0); `stores_zero` makes /add accept amount 0, `not_ready` makes
    /readyz answer 503."""

    def __init__(self, stores_zero: bool = False, not_ready: bool = False) -> None:
        self.rows: dict[int, dict] = {}
        self.hits: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, body: str, ctype: str = "text/plain") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                fake.hits.append(f"GET {self.headers['Host']}{self.path}")
                path = urlsplit(self.path).path
                if path == "/ping":
                    return self._send(200, "pong")
                if path == "/readyz":
                    return self._send(503, "database unreachable") if not_ready else self._send(200, "ready")
                m = re.fullmatch(r"/get/(\d+)", path)
                if m and int(m.group(1)) in fake.rows:
                    return self._send(200, json.dumps(fake.rows[int(m.group(1))], separators=(",", ":")), "application/json")
                return self._send(404, "not found")

            def do_POST(self) -> None:  # noqa: N802
                fake.hits.append(f"POST {self.headers['Host']}{self.path}")
                url = urlsplit(self.path)
                if url.path != "/add":
                    return self._send(404, "not found")
                q = parse_qs(url.query)
                amount = int(q["amount"][0])
                if amount <= 0 and not stores_zero:
                    return self._send(400, json.dumps({"error": "invalid_amount", "message": f"amount must be greater than 0, got {amount}"}), "application/json")
                tid = len(fake.rows) + 1
                fake.rows[tid] = {"id": tid, "client_id": q["client_id"][0], "amount": amount, "created_at": "2025-01-01T00:00:00Z"}
                return self._send(201, f"Transaction added. transaction id={tid}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run_test_pod_script(values: tuple[str, ...], fake: FakeBilling, tmp_path) -> subprocess.CompletedProcess:
    pod = render("helm3", values=values).get("Pod", "billing-test-api")
    script = container(pod["spec"], "api")["args"][0]
    # Every in-cluster address becomes the stand-in; curl keeps the original
    # name in the Host header, so the test still sees which name was used.
    hosts = sorted(set(re.findall(r"http://([a-z0-9.-]+\.svc\.cluster\.local):8080", script)))
    assert hosts
    resolve = " ".join(f"--resolve {h}:{fake.port}:127.0.0.1" for h in hosts)
    script = script.replace(":8080", f":{fake.port}").replace("curl ", f"curl {resolve} ")
    # The pod's /tmp is an emptyDir; here, a directory of the test's own.
    for name in ("ready", "refused"):
        script = script.replace(f"/tmp/{name}", str(tmp_path / name))
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("values", [("task1.yaml",), ("task2.yaml",)], ids=["deployment", "statefulset"])
def test_script_passes_against_a_working_api_and_stores_nothing(values, tmp_path):
    fake = FakeBilling()
    try:
        proc = run_test_pod_script(values, fake, tmp_path)
    finally:
        fake.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    targets = 1 if values == ("task1.yaml",) else 4
    assert f"OK: {targets} endpoint(s) passed" in proc.stdout
    posts = [h for h in fake.hits if h.startswith("POST")]
    assert len(posts) == targets
    assert all("amount=0" in p for p in posts)
    readies = [h for h in fake.hits if h.startswith("GET") and h.endswith("/readyz")]
    assert len(readies) == targets
    # Nothing a user could take for their own payment.
    assert fake.rows == {}
    if targets == 4:
        for i in range(3):
            assert any(f"billing-stateful-{i}.billing-stateful.default.svc.cluster.local" in h for h in posts)


def test_script_fails_when_the_api_would_store_an_invalid_payment(tmp_path):
    fake = FakeBilling(stores_zero=True)
    try:
        proc = run_test_pod_script(("task1.yaml",), fake, tmp_path)
    finally:
        fake.close()
    assert proc.returncode != 0
    assert "with amount=0 answered 201, expected 400" in proc.stdout


def test_script_fails_when_a_pod_is_not_ready(tmp_path):
    fake = FakeBilling(not_ready=True)
    try:
        proc = run_test_pod_script(("task2.yaml",), fake, tmp_path)
    finally:
        fake.close()
    assert proc.returncode != 0
    assert "/readyz answered 503" in proc.stdout


# ---------------------------------------------------------------- the ledger container, on a real PostgreSQL

MIGRATION = Path(__file__).resolve().parents[2] / "billing" / "migrations" / "2026-11-27-000001_create_transactions" / "up.sql"


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql: run scripts/install-postgres.sh", pytrace=False)
    return found[-1].parent


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL on a Unix socket (as the `postgres` account when we are root), with billing's
    ledger owned by a plain role `billing` and a role `reader` that may only read it."""
    bin_dir = _pg_bin()
    # Not under pytest's tmp_path: its parents are private to root, which the server account cannot cross.
    root = Path(tempfile.mkdtemp(prefix="billing-helm-test-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = "postgres" if subprocess.run(["id", "postgres"], capture_output=True).returncode == 0 else "nobody"
        shutil.chown(root, user)
        prefix = ["runuser", "-u", user, "--"]
    data, sock = root / "data", root
    port = str(54329 + os.getpid() % 500)
    subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"], check=True, capture_output=True)
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-k {sock} -c listen_addresses='' -p {port}", "start"], check=True, capture_output=True)
    env = {**os.environ, "PGHOST": str(sock), "PGPORT": port, "PGDATABASE": "postgres"}

    def psql(user: str, sql: str) -> str:
        return subprocess.run([str(bin_dir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-U", user, "-c", sql],
                              env=env, check=True, capture_output=True, text=True).stdout.strip()

    psql("postgres", "CREATE ROLE billing LOGIN; CREATE ROLE reader LOGIN; GRANT CREATE ON SCHEMA public TO billing")
    subprocess.run([str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "billing", "-f", str(MIGRATION)],
                   env=env, check=True, capture_output=True)
    psql("billing", "GRANT SELECT ON transactions TO reader")
    yield bin_dir, env, psql
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def _ledger_script() -> str:
    pod = render("helm3", values=("task1.yaml",)).get("Pod", "billing-test-api")
    c = container(pod["spec"], "ledger")
    assert c["command"] == ["/bin/sh", "-c"]
    return c["args"][0]


def test_ledger_check_writes_as_billings_role_and_leaves_no_row_and_no_id(postgres):
    bin_dir, env, psql = postgres
    psql("billing", "INSERT INTO transactions (client_id, amount) VALUES ('user', 1000)")  # the user's payment, id 1
    proc = subprocess.run(["/bin/sh", "-c", _ledger_script()], env={**env, "PGUSER": "billing", "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: role billing can write the ledger" in proc.stdout
    assert psql("billing", "SELECT count(*) FROM transactions") == "1"
    # The id sequence did not move: the user's next payment is id 2.
    assert psql("billing", "INSERT INTO transactions (client_id, amount) VALUES ('user', 5) RETURNING id") == "2"


def test_ledger_check_fails_for_a_role_that_cannot_write(postgres):
    bin_dir, env, psql = postgres
    proc = subprocess.run(["/bin/sh", "-c", _ledger_script()], env={**env, "PGUSER": "reader", "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "FAIL: the ledger refused a payment from role reader" in proc.stdout
