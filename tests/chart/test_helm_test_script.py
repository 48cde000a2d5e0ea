"""The script of the `helm test` pod, run for real with /bin/sh and curl
against a stand-in of the billing API on loopback: it passes against an API
that keeps what it is given, and fails (non-zero, with a FAIL line) against
one that does not."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import container, render



@pytest.fixture(autouse=True)
def _curl():
    if shutil.which("curl") is None:
        pytest.fail("these tests run the helm test script with curl, which is not installed", pytrace=False)


class FakeBilling:
    """/ping, POST /add, GET /get/<id>, like the service; `broken` makes
    /get return another client's transaction."""

    def __init__(self, broken: bool = False) -> None:
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
                m = re.fullmatch(r"/get/(\d+)", path)
                if m and int(m.group(1)) in fake.rows:
                    row = dict(fake.rows[int(m.group(1))])
                    if broken:
                        row["client_id"] = "someone-else"
                    return self._send(200, json.dumps(row, separators=(",", ":")), "application/json")
                return self._send(404, "not found")

            def do_POST(self) -> None:  # noqa: N802
                fake.hits.append(f"POST {self.headers['Host']}{self.path}")
                url = urlsplit(self.path)
                if url.path != "/add":
                    return self._send(404, "not found")
                q = parse_qs(url.query)
                tid = len(fake.rows) + 1
                fake.rows[tid] = {
                    "id": tid,
                    "client_id": q["client_id"][0],
                    "amount": int(q["amount"][0]),
                    "created_at": "2025-01-01T00:00:00Z",
                }
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
    script = script.replace("/tmp/added", str(tmp_path / "added"))
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("values", [("task1.yaml",), ("task2.yaml",)], ids=["deployment", "statefulset"])
def test_script_passes_against_a_working_api(values, tmp_path):
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
    if targets == 4:
        for i in range(3):
            assert any(f"billing-stateful-{i}.billing-stateful.default.svc.cluster.local" in h for h in posts)


def test_script_fails_when_the_api_loses_the_transaction(tmp_path):
    fake = FakeBilling(broken=True)
    try:
        proc = run_test_pod_script(("task1.yaml",), fake, tmp_path)
    finally:
        fake.close()
    assert proc.returncode != 0
    assert "FAIL: /get/1 does not return client" in proc.stdout
