"""Issue 10 §2, least privilege: billing connects as a plain role that owns
the ledger; the superuser's password is in a Secret billing never mounts; the
role-setup Job's script, run for real against a real PostgreSQL (password
authentication, scram-sha-256), converts a data directory made before the
application role in place and keeps every row, and is idempotent."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import container, env_of, render, render_error, values_file

MIGRATION = Path(__file__).resolve().parents[2] / "billing" / "migrations" / "2026-11-27-000001_create_transactions" / "up.sql"
APP_PW, SUPER_PW = "app-secret-1", "super-secret-2"


@pytest.mark.parametrize(("values", "kind", "name"), [(("task1.yaml",), "Deployment", "billing"),
                                                      (("task2.yaml",), "StatefulSet", "billing-stateful")])
def test_billing_never_sees_the_superuser_secret(helm, values, kind, name):
    r = render(helm, values=values)
    spec = r.get(kind, name)["spec"]["template"]["spec"]
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for c in spec["containers"] for e in c.get("env", []) if "valueFrom" in e]
    refs += [v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v]
    assert refs == ["billing-postgresql"]
    assert "postgres://billing@billing-postgresql:5432/billing" == env_of(container(spec, "billing"))["DATABASE_URL"]["value"]
    sup = r.get("Secret", "billing-postgresql-superuser")
    assert sup["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert sup["data"]["password"] != r.get("Secret", "billing-postgresql")["data"]["password"]


def test_postgresql_initialises_with_its_own_superuser_and_creates_the_application_role(helm):
    r = render(helm)
    pod = r.get("Deployment", "billing-postgresql")["spec"]["template"]["spec"]
    env = env_of(container(pod, "postgresql"))
    assert env["POSTGRES_USER"]["value"] == "postgres"
    assert env["POSTGRES_PASSWORD_FILE"]["value"] == "/run/secrets/postgresql-superuser/password"
    assert env["BILLING_APP_USER"]["value"] == "billing"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["superuser-password"]["secret"]["secretName"] == "billing-postgresql-superuser"
    assert vols["initdb"]["configMap"]["name"] == "billing-postgresql-initdb"
    script = r.get("ConfigMap", "billing-postgresql-initdb")["data"]["10-application-role.sh"]
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS" in script
    assert 'ALTER DATABASE :"db" OWNER TO :"role"' in script


def test_role_setup_job_is_a_hook_of_every_install_and_upgrade(helm):
    job = render(helm).get("Job", "billing-postgresql-roles")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = job["spec"]["template"]["spec"]
    assert {v["secret"]["secretName"] for v in pod["volumes"]} == {"billing-postgresql", "billing-postgresql-superuser"}
    assert job["spec"]["template"]["metadata"]["labels"]["billing/postgresql-client"] == "true"
    assert not render(helm, sets={"postgresql.enabled": "false", "externalDatabase.url": "postgres://b@db/b",
                                  "externalDatabase.existingSecret": "x"}).all("Job")


def test_role_setup_job_waits_for_the_server_as_a_named_role(helm):
    """The Job runs as uid 65532, which has no user name: pg_isready without -U cannot even try (exit 3), and
    the wait would run to its end (3 minutes on every install and upgrade, as a first e2e run showed)."""
    script = container(render(helm).get("Job", "billing-postgresql-roles")["spec"]["template"]["spec"], "roles")["args"][0]
    assert 'pg_isready -q -U "$SUPER_USER" && break' in script
    assert "pg_isready -q &&" not in script


def test_network_policy_admits_billing_and_the_charts_own_clients(helm):
    r = render(helm, sets={"networkPolicy.enabled": "true"})
    (rule,) = r.get("NetworkPolicy", "billing-postgresql")["spec"]["ingress"]
    selectors = [f["podSelector"]["matchLabels"] for f in rule["from"]]
    assert selectors[0]["app"] == "billing"
    assert selectors[1] == {"app.kubernetes.io/instance": "billing", "billing/postgresql-client": "true"}
    test_pod = r.get("Pod", "billing-test-api")
    assert test_pod["metadata"]["labels"]["billing/postgresql-client"] == "true"


def test_application_role_must_not_be_the_superuser(helm):
    err = render_error(helm, "--set", "postgresql.auth.superuser.username=billing")
    assert "billing's application role must not be the superuser" in err


def test_superuser_existing_secret(helm):
    r = render(helm, sets={"postgresql.auth.superuser.existingSecret": "pg-admin",
                           "postgresql.auth.superuser.existingSecretPasswordKey": "pw"})
    assert not r.has("Secret", "billing-postgresql-superuser")
    vols = {v["name"]: v for v in r.get("Deployment", "billing-postgresql")["spec"]["template"]["spec"]["volumes"]}
    assert vols["superuser-password"]["secret"] == {"secretName": "pg-admin", "defaultMode": 0o440, "items": [{"key": "pw", "path": "password"}]}


# ---------------------------------------------------------------- the Job's script on a real PostgreSQL


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql: run scripts/install-postgres.sh", pytrace=False)
    return found[-1].parent


class Server:
    """A throwaway PostgreSQL made as a release before the application role made it: initdb's bootstrap
    superuser is `billing`, with billing's password, and billing's migration created the ledger."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="billing-roles-pg-"))
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres" if subprocess.run(["id", "postgres"], capture_output=True).returncode == 0 else "nobody"
            shutil.chown(self.root, user)
            self.prefix = ["runuser", "-u", user, "--"]
        pwfile = self.root / "pw"
        pwfile.write_text(APP_PW + "\n")
        pwfile.chmod(0o644)
        self.port = str(55329 + os.getpid() % 500)
        self.data = self.root / "data"
        subprocess.run([*self.prefix, str(self.bin / "initdb"), "-D", str(self.data), "-U", "billing", f"--pwfile={pwfile}",
                        "--auth=scram-sha-256"], check=True, capture_output=True)
        subprocess.run([*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.root / "log"), "-o",
                        f"-k {self.root} -c listen_addresses='' -p {self.port}", "start"], check=True, capture_output=True)
        self.env = {**os.environ, "PGHOST": str(self.root), "PGPORT": self.port, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        self.psql("billing", APP_PW, "postgres", "CREATE DATABASE billing")
        subprocess.run([str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "billing", "-d", "billing", "-f", str(MIGRATION)],
                       env={**self.env, "PGPASSWORD": APP_PW}, check=True, capture_output=True)
        self.psql("billing", APP_PW, "billing", "INSERT INTO transactions (client_id, amount) SELECT 'c' || g, g FROM generate_series(1, 50) g")

    def psql(self, user: str, password: str, db: str, sql: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", db, "-c", sql],
                              env={**self.env, "PGPASSWORD": password}, check=check, capture_output=True, text=True)

    def close(self) -> None:
        subprocess.run([*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def legacy_server():
    server = Server()
    yield server
    server.close()


def run_job(server: Server, tmp_path: Path) -> subprocess.CompletedProcess:
    job = render("helm3").get("Job", "billing-postgresql-roles")
    c = container(job["spec"]["template"]["spec"], "roles")
    script = c["args"][0]
    secrets = tmp_path / "secrets"
    for name, pw in (("superuser", SUPER_PW), ("application", APP_PW)):
        (secrets / name).mkdir(parents=True, exist_ok=True)
        (secrets / name / "password").write_text(pw)
    script = script.replace("/run/secrets/", f"{secrets}/")
    env = {**server.env, **{e["name"]: e["value"] for e in c["env"] if "value" in e and not e["name"].startswith("PG")}}
    return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False)


def roles(server: Server) -> str:
    return server.psql("postgres", SUPER_PW, "postgres",
                       "SELECT rolname || ' ' || rolsuper || rolcreatedb || rolcreaterole || rolreplication || rolbypassrls "
                       "FROM pg_roles WHERE rolname IN ('billing', 'postgres') ORDER BY 1").stdout.strip()


def test_job_converts_a_data_directory_from_before_the_application_role(legacy_server, tmp_path):
    s = legacy_server
    # billing has an open session as the bootstrap superuser, as its pool would.
    session = subprocess.Popen([str(s.bin / "psql"), "-X", "-q", "-U", "billing", "-d", "billing", "-c", "SELECT pg_sleep(30)"],
                               env={**s.env, "PGPASSWORD": APP_PW}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc = run_job(s, tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "role billing is the bootstrap superuser" in proc.stdout
        assert "ended 1 session(s) still open as the old role" in proc.stdout
        assert session.wait(10) != 0  # the old superuser session was ended
    finally:
        session.kill()
    assert roles(s) == "billing falsefalsefalsefalsefalse\npostgres truetruetruetruetrue"
    assert s.psql("postgres", SUPER_PW, "billing", "SELECT tableowner FROM pg_tables WHERE tablename = 'transactions'").stdout.strip() == "billing"
    assert s.psql("postgres", SUPER_PW, "billing", "SELECT datdba::regrole FROM pg_database WHERE datname = 'billing'").stdout.strip() == "billing"
    # Every row kept; billing, with the password it always had, writes and reads as the plain role.
    assert s.psql("billing", APP_PW, "billing", "SELECT count(*), sum(amount) FROM transactions").stdout.strip() == "50|1275"
    assert s.psql("billing", APP_PW, "billing", "INSERT INTO transactions (client_id, amount) VALUES ('after', 1) RETURNING id").stdout.strip() == "51"
    # ... and can do nothing else.
    for sql in ("CREATE DATABASE other", "CREATE ROLE other", "ALTER ROLE billing SUPERUSER"):
        assert s.psql("billing", APP_PW, "postgres", sql, check=False).returncode != 0, sql
    assert s.psql("postgres", SUPER_PW, "postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'billing_chart_convert'").stdout.strip() == "0"
    # A second run (every later upgrade) finds the converted state and changes nothing.
    again = run_job(s, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "superuser postgres logs in" in again.stdout
    assert roles(s) == "billing falsefalsefalsefalsefalse\npostgres truetruetruetruetrue"
    assert s.psql("billing", APP_PW, "billing", "SELECT count(*) FROM transactions").stdout.strip() == "51"


def test_job_fails_with_neither_password(legacy_server, tmp_path):
    s = legacy_server
    s.psql("billing", APP_PW, "postgres", "ALTER ROLE billing PASSWORD 'changed'")
    proc = run_job(s, tmp_path)
    assert proc.returncode != 0
    assert "FAIL: neither postgres with the superuser Secret's password nor billing as a superuser can log in" in proc.stdout


def test_superuser_schema_refuses_a_bad_name(helm):
    err = render_error(helm, "-f", values_file("task1.yaml"), "--set", "postgresql.auth.superuser.username=Admin-1")
    assert "superuser" in err and "username" in err
