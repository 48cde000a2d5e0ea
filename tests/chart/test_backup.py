"""Issue 23 §1: backups of the bundled PostgreSQL (backup.*). The CronJob and
its claim as rendered in both tasks, the refusals, and the rendered scripts
themselves run against a real PostgreSQL: a dump is written only when
complete, pruned to `keep` only after success, fails visibly, and restores on a
fresh data directory (never an initialised one) with every row, the sequence,
and billing's ownership as the chart makes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import container, env_of, render, render_error

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = sorted((ROOT / "billing" / "migrations").glob("*/up.sql"))
TASKS = (("task1.yaml",), ("task2.yaml",))
ON = {"backup.enabled": "true"}
RESTORE = {"backup.enabled": "true", "backup.restore.enabled": "true"}


def cronjob(r):
    return r.get("CronJob", "billing-backup")


def job_pod(r) -> dict:
    return cronjob(r)["spec"]["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("values", TASKS, ids=["task1", "task2"])
def test_off_by_default_nothing_is_rendered(helm, values):
    r = render(helm, values=values)
    assert not r.all("CronJob")
    assert not r.has("PersistentVolumeClaim", "billing-backup")
    pod = r.get("Deployment", "billing-postgresql")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert {v["name"] for v in pod["volumes"]}.isdisjoint({"backup", "restore"})
    assert list(r.get("ConfigMap", "billing-postgresql-initdb")["data"]) == ["10-application-role.sh"]


@pytest.mark.parametrize("values", TASKS, ids=["task1", "task2"])
def test_cronjob_dumps_the_ledger_as_billings_role_onto_its_own_kept_claim(helm, values):
    r = render(helm, values=values, sets=ON)
    cj = cronjob(r)
    spec = cj["spec"]
    assert spec["schedule"] == "0 * * * *"
    assert "timeZone" not in spec
    assert spec["concurrencyPolicy"] == "Forbid"
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"], spec["startingDeadlineSeconds"]) == (3, 3, 300)
    job = spec["jobTemplate"]["spec"]
    assert (job["backoffLimit"], job["activeDeadlineSeconds"]) == (2, 3600)
    pod = job_pod(r)
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == 999 and pod["securityContext"]["fsGroup"] == 999
    c = container(pod, "backup")
    # The database's own image: its pg_dump is the server's version.
    assert c["image"] == r.get("Deployment", "billing-postgresql")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    env = {k: v.get("value") for k, v in env_of(c).items()}
    assert env["PGHOST"] == "billing-postgresql" and env["PGPORT"] == "5432"
    assert env["PGUSER"] == "billing" and env["PGDATABASE"] == "billing"
    assert env["KEEP"] == "24" and env["STALE_MINUTES"] == "61"
    assert not any("valueFrom" in e for e in c["env"])  # the password is a mounted file, never in the environment
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["backup"]["persistentVolumeClaim"] == {"claimName": "billing-backup"}
    assert vols["password"]["secret"]["secretName"] == "billing-postgresql"
    assert "billing-postgresql-superuser" not in str(vols)
    script = c["args"][0]
    for needle in ("pg_dump --format=custom", "pg_restore --list", 'sync "$tmp"', 'mv "$tmp"', 'sync "$BACKUP_DIR"'):
        assert needle in script
    # The NetworkPolicy admits the Job's pods as one of the chart's own clients.
    labels = cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels["billing/postgresql-client"] == "true" and labels["app.kubernetes.io/instance"] == "billing"
    pvc = r.get("PersistentVolumeClaim", "billing-backup")
    assert pvc["spec"]["storageClassName"] == "billing-retain"
    assert r.get("StorageClass", "billing-retain")["reclaimPolicy"] == "Retain"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["metadata"]["labels"]["app.kubernetes.io/component"] == "backup"
    # Backups change nothing that runs the course: billing's pods and PostgreSQL's are as without them.
    plain = render(helm, values=values)
    assert r.get("Deployment", "billing-postgresql") == plain.get("Deployment", "billing-postgresql")


def test_cronjob_settings_and_an_existing_claim(helm):
    r = render(helm, sets={**ON, "backup.cronjob.schedule": "30 2 * * *", "backup.cronjob.timeZone": "Europe/Moscow",
                           "backup.cronjob.concurrencyPolicy": "Replace", "backup.keep": "7",
                           "backup.storage.existingClaim": "my-dumps", "backup.storage.size": "10Gi"})
    spec = cronjob(r)["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == ("30 2 * * *", "Europe/Moscow", "Replace")
    assert env_of(container(job_pod(r), "backup"))["KEEP"]["value"] == "7"
    assert not r.has("PersistentVolumeClaim", "billing-backup")
    assert {v["name"]: v for v in job_pod(r)["volumes"]}["backup"]["persistentVolumeClaim"]["claimName"] == "my-dumps"


def test_backup_claim_storage_class_and_keep(helm):
    r = render(helm, sets={**ON, "backup.storage.storageClassName": "offsite", "backup.storage.keep": "false"})
    pvc = r.get("PersistentVolumeClaim", "billing-backup")
    assert pvc["spec"]["storageClassName"] == "offsite"
    assert "annotations" not in pvc["metadata"]


@pytest.mark.parametrize("values", TASKS, ids=["task1", "task2"])
def test_restore_mounts_the_dumps_read_only_and_checks_before_the_first_start(helm, values):
    r = render(helm, values=values, sets={**RESTORE, "backup.restore.file": "billing-20261206T120000Z.dump"})
    pod = r.get("Deployment", "billing-postgresql")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["name"] == "restore-check"
    assert env_of(init)["RESTORE_FILE"]["value"] == "billing-20261206T120000Z.dump"
    # It decides under the server's volume lock, so a previous server still on the volume is gone first.
    assert env_of(init)["VOLUME_LOCK"]["value"] == "/var/lib/postgresql/data/postmaster.flock"
    mounts = {m["name"]: m for m in container(pod, "postgresql")["volumeMounts"]}
    assert mounts["backup"]["readOnly"] is True and mounts["backup"]["mountPath"] == "/backup"
    assert mounts["restore"]["readOnly"] is True
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["backup"]["persistentVolumeClaim"] == {"claimName": "billing-backup", "readOnly": True}
    assert "PG_VERSION" in init["args"][0] and "NOT restoring" in init["args"][0]
    script = r.get("ConfigMap", "billing-postgresql-initdb")["data"]["20-restore-backup.sh"]
    assert '--role "$BILLING_APP_USER" --no-owner --no-acl' in script
    assert "--single-transaction --exit-on-error" in script
    assert 'ALTER DATABASE :"tmp" RENAME TO :"db"' in script


REFUSALS = [
    ("external-database", ["--set", "backup.enabled=true", "--set", "postgresql.enabled=false", "--set", "externalDatabase.host=db.example.com"],
     "backup.enabled is true but postgresql.enabled is false"),
    ("cloudnativepg", ["--api-versions", "postgresql.cnpg.io/v1/Cluster", "-f", str(ROOT / "values" / "ha.yaml"), "--set", "backup.enabled=true"],
     "backup.enabled is true with database.cnpg.enabled"),
    ("restore-without-backup", ["--set", "backup.restore.enabled=true"],
     "backup.restore.enabled is true but backup.enabled is false"),
]


@pytest.mark.parametrize(("args", "says"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_combinations_that_cannot_work_are_refused(helm, args, says):
    err = render_error(helm, *args)
    assert says in err, err


SCHEMA_REFUSALS = [
    ("keep-zero", "backup.keep=0", "backup.keep: Must be greater than or equal to 1", "at '/backup/keep': minimum: got 0, want 1"),
    ("schedule-words", "backup.cronjob.schedule=every hour", "backup.cronjob.schedule: Does not match pattern",
     "at '/backup/cronjob/schedule': 'every hour' does not match pattern"),
    ("schedule-four-fields", "backup.cronjob.schedule=0 * * *", "backup.cronjob.schedule: Does not match pattern",
     "at '/backup/cronjob/schedule': '0 * * *' does not match pattern"),
    ("concurrency-allow", "backup.cronjob.concurrencyPolicy=Allow", "backup.cronjob.concurrencyPolicy must be one of the following",
     "at '/backup/cronjob/concurrencyPolicy': value must be one of"),
    ("restore-file-with-a-directory", "backup.restore.file=../x.dump", "backup.restore.file: Does not match pattern",
     "at '/backup/restore/file': '../x.dump' does not match pattern"),
    ("no-failed-history", "backup.cronjob.failedJobsHistoryLimit=0", "backup.cronjob.failedJobsHistoryLimit: Must be greater than or equal to 1",
     "at '/backup/cronjob/failedJobsHistoryLimit': minimum: got 0, want 1"),
    ("typo", "backup.kepp=3", "backup: Additional property kepp is not allowed", "at '/backup': additional properties 'kepp' not allowed"),
]


@pytest.mark.parametrize(("value", "helm3_says", "helm4_says"), [r[1:] for r in SCHEMA_REFUSALS], ids=[r[0] for r in SCHEMA_REFUSALS])
def test_bad_backup_values_are_refused_by_the_schema(helm, value, helm3_says, helm4_says):
    err = render_error(helm, "--set", "backup.enabled=true", "--set", value)
    assert "values don't meet the specifications of the schema" in err
    assert (helm3_says if helm == "helm3" else helm4_says) in err, err


# ---------------------------------------------------------------- the rendered scripts on a real PostgreSQL

APP_PW = "app-secret-1"


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql: run scripts/install-postgres.sh", pytrace=False)
    return found[-1].parent


class Pg:
    """Throwaway servers on Unix sockets in one directory, run as an unprivileged user as the image runs them."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="billing-backup-pg-"))
        self.root.chmod(0o755)
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres" if subprocess.run(["id", "postgres"], capture_output=True).returncode == 0 else "nobody"
            shutil.chown(self.root, user)
            self.prefix = ["runuser", "-u", user, "--"]
        self.env = {**os.environ, "PGHOST": str(self.root), "PATH": f"{self.bin}:{os.environ['PATH']}"}
        self.servers: list[Path] = []

    def sh(self, script: str, env: dict, check: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.prefix, "/bin/sh", "-c", script], env={**self.env, **env}, capture_output=True, text=True,
                              timeout=120, check=False)
        assert not check or proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def mkdir(self, name: str) -> Path:
        self.sh(f"mkdir -p {self.root / name}", {}, check=True)
        return self.root / name

    def start(self, data: Path, port: int) -> None:
        """initdb (local trust, as the image's init phase uses the socket) and start on the socket only."""
        self.sh(f"initdb -U postgres --auth-local=trust -D {data} >/dev/null", {}, check=True)
        self.sh(f"pg_ctl -D {data} -w -l {data}.log -o \"-k {self.root} -c listen_addresses='' -p {port}\" start >/dev/null", {},
                check=True)
        self.servers.append(data)

    def psql(self, port: int, db: str, sql: str, user: str = "postgres") -> str:
        return self.sh(f'psql -X -q -t -A -v ON_ERROR_STOP=1 -U {user} -d {db} -c "$SQL"', {"PGPORT": str(port), "SQL": sql},
                       check=True).stdout.strip()

    def close(self) -> None:
        for data in self.servers:
            self.sh(f"pg_ctl -D {data} -m immediate -w stop", {})
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def pg():
    server = Pg()
    yield server
    server.close()


def _scripts(tmp: Path) -> dict[str, str]:
    """The chart's three scripts, with the pod's fixed paths moved under tmp."""
    r = render("helm3", values=("task1.yaml",), sets=RESTORE)
    moves = {"/run/secrets/postgresql/password": f"{tmp}/pw", "/run/billing-restore": f"{tmp}/restore", "/tmp/toc": f"{tmp}/toc",
             '"/backup"': f'"{tmp}/backup"', "/var/lib/postgresql/data/": f"{tmp}/data2/"}
    pod = r.get("Deployment", "billing-postgresql")["spec"]["template"]["spec"]
    cm = r.get("ConfigMap", "billing-postgresql-initdb")["data"]
    out = {"backup": container(job_pod(r), "backup")["args"][0], "check": pod["initContainers"][0]["args"][0],
           "role": cm["10-application-role.sh"], "restore": cm["20-restore-backup.sh"]}
    for k, text in out.items():
        for a, b in moves.items():
            text = text.replace(a, b)
        out[k] = text
    return out


def _dump_env(pg: Pg, port: int, keep: int = 2) -> dict:
    return {"PGPORT": str(port), "PGUSER": "billing", "PGDATABASE": "billing", "BACKUP_DIR": str(pg.root / "backup"), "CLAIM": "billing-backup",
            "KEEP": str(keep), "STALE_MINUTES": "61"}


def _check_env(pg: Pg, data_mount: Path, file: str = "") -> dict:
    return {"DATA_MOUNT": str(data_mount), "DATA_SUBDIR": "pgdata", "MARKER": f"{data_mount}/billing-restore-incomplete",
            "VOLUME_LOCK": f"{data_mount}/postmaster.flock",
            "BACKUP_DIR": str(pg.root / "backup"), "CLAIM": "billing-backup", "DB": "billing", "RESTORE_FILE": file}


def _ledger(pg: Pg, port: int) -> str:
    return pg.psql(port, "billing", "SELECT id, client_id, amount, created_at FROM transactions ORDER BY id")


def test_dump_prune_and_restore_on_a_real_postgresql(pg):
    s = _scripts(pg.root)
    pg.sh(f"printf '{APP_PW}' >{pg.root}/pw; mkdir -p {pg.root}/backup {pg.root}/restore {pg.root}/data2", {}, check=True)
    # The live server, as the chart makes it: billing's role owns the database and the ledger it migrated.
    pg.start(pg.root / "data1", 55601)
    pg.psql(55601, "postgres", f"CREATE ROLE billing LOGIN PASSWORD '{APP_PW}'")
    pg.psql(55601, "postgres", "CREATE DATABASE billing OWNER billing")
    # No ledger yet (billing never started): the dump fails, visibly, and leaves no file.
    empty = pg.sh(s["backup"], _dump_env(pg, 55601))
    assert empty.returncode != 0 and "the dump holds no ledger" in empty.stdout, empty.stdout + empty.stderr
    assert list((pg.root / "backup").iterdir()) == []
    for m in MIGRATIONS:
        pg.psql(55601, "billing", m.read_text(), user="billing")
    pg.psql(55601, "billing", "INSERT INTO transactions (client_id, amount) SELECT 'c' || g, g FROM generate_series(1, 50) g", user="billing")
    pg.psql(55601, "billing", "DELETE FROM transactions WHERE id > 45", user="billing")  # the sequence is ahead of max(id)

    # Three dumps with keep=2: the oldest is pruned, only after the newest is complete; nothing half-written remains.
    names = []
    for _ in range(3):
        out = pg.sh(s["backup"], _dump_env(pg, 55601), check=True).stdout
        assert "backup: wrote billing-" in out, out
        names.append(out.split("wrote ", 1)[1].split(":", 1)[0])
        pg.sh("sleep 1.1", {})
    files = sorted(p.name for p in (pg.root / "backup").iterdir())
    assert files == names[1:], files
    assert oct((pg.root / "backup" / names[-1]).stat().st_mode & 0o777) == "0o640"
    before = _ledger(pg, 55601)

    # A dump that cannot connect fails its Job and touches no earlier dump.
    bad = pg.sh(s["backup"], {**_dump_env(pg, 55601), "PGPORT": "55699"})
    assert bad.returncode != 0 and "FAILED: pg_dump exited" in bad.stdout, bad.stdout + bad.stderr
    assert sorted(p.name for p in (pg.root / "backup").iterdir()) == files

    # Disaster: a fresh data directory. The check picks the newest dump; the init script restores it.
    check = pg.sh(s["check"], _check_env(pg, pg.root / "data2"), check=True)
    assert f"will restore {names[-1]}" in check.stdout, check.stdout
    data = pg.root / "data2" / "pgdata"
    pg.start(data, 55602, )
    pg.psql(55602, "postgres", "CREATE DATABASE billing")  # what the image does before its init scripts
    init_env = {"PGPORT": "55602", "POSTGRES_USER": "postgres", "POSTGRES_DB": "billing", "BILLING_APP_USER": "billing",
                "BILLING_APP_PASSWORD_FILE": f"{pg.root}/pw", "PGDATA": str(data)}
    pg.sh(s["role"], init_env, check=True)
    restored = pg.sh(s["restore"], init_env, check=True)
    # The next id starts backup.restore.idGap (1,000,000) past the dump's sequence (50: ids 46-50 were deleted).
    assert "45 payments, ids 1..45, next id from 1000051" in restored.stdout, restored.stdout
    assert _ledger(pg, 55602) == before
    assert not (pg.root / "data2" / "billing-restore-incomplete").exists()
    # Billing's role and grants as the chart makes them: it owns the database and every object, nothing else is granted.
    assert pg.psql(55602, "postgres", "SELECT datdba::regrole, datacl IS NULL FROM pg_database WHERE datname = 'billing'") == "billing|t"
    assert pg.psql(55602, "postgres", "SELECT count(*) FROM pg_database WHERE datname = 'billing_restoring'") == "0"
    assert pg.psql(55602, "billing", "SELECT string_agg(DISTINCT relowner::regrole::text, ','), bool_and(relacl IS NULL) FROM pg_class "
                                     "WHERE relnamespace = 'public'::regnamespace") == "billing|t"
    assert pg.psql(55602, "billing", "SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles WHERE rolname = 'billing'") == "f"
    # New payments continue above the restored ids; migrations are recorded, so billing runs none again.
    assert pg.psql(55602, "billing", "INSERT INTO transactions (client_id, amount) VALUES ('new', 1) RETURNING id", user="billing") == "1000051"

    # An initialised data directory is never restored over.
    again = pg.sh(s["check"], _check_env(pg, pg.root / "data2"), check=True)
    assert "already initialised: NOT restoring" in again.stdout, again.stdout
    assert len(_ledger(pg, 55602).splitlines()) == 46


def test_restore_refuses_missing_or_broken_dumps_and_retries_a_cut_off_one(pg):
    s = _scripts(pg.root)
    pg.sh(f"mkdir -p {pg.root}/backup {pg.root}/restore {pg.root}/d", {}, check=True)
    # A previous server still holding the volume lock: the check waits for it before it looks at anything.
    holder = subprocess.Popen([*pg.prefix, "flock", str(pg.root / "d" / "postmaster.flock"), "sleep", "2"])
    try:
        pg.sh("sleep 0.5", {})
        empty = pg.sh(s["check"], _check_env(pg, pg.root / "d"))
    finally:
        holder.wait(10)
    assert "another PostgreSQL server still runs on this volume" in empty.stdout, empty.stdout
    assert empty.returncode != 0 and "FAILED: no dump named billing-<time>.dump" in empty.stdout, empty.stdout
    named = pg.sh(s["check"], _check_env(pg, pg.root / "d", "billing-20261206T120000Z.dump"))
    assert named.returncode != 0 and "FAILED: no dump billing-20261206T120000Z.dump" in named.stdout
    pg.sh(f"head -c 300 /dev/urandom >{pg.root}/backup/billing-20261206T120000Z.dump", {}, check=True)
    broken = pg.sh(s["check"], _check_env(pg, pg.root / "d"))
    assert broken.returncode != 0 and "does not read as a pg_dump custom-format archive" in broken.stdout, broken.stdout
    # A restore cut off mid-way (its marker is still there): the data directory is emptied and the restore starts over.
    pg.sh(f"mkdir -p {pg.root}/d/pgdata/base && echo 15 >{pg.root}/d/pgdata/PG_VERSION && : >{pg.root}/d/billing-restore-incomplete", {},
          check=True)
    cut = pg.sh(s["check"], _check_env(pg, pg.root / "d"))
    assert "was cut off before it finished" in cut.stdout, cut.stdout
    assert list((pg.root / "d" / "pgdata").iterdir()) == [] and not (pg.root / "d" / "billing-restore-incomplete").exists()
    # pg_restore failing during init (the dump went bad after the check): the temporary server is stopped and the
    # data directory emptied, so the container's next start initialises and restores from scratch.
    (pg.root / "restore" / "file").write_text("billing-20261206T120000Z.dump\n")
    data = pg.root / "d" / "pgdata"
    pg.sh(f"rmdir {data}", {}, check=True)
    pg.start(data, 55603, )
    pg.psql(55603, "postgres", "CREATE DATABASE billing")
    env = {"PGPORT": "55603", "POSTGRES_USER": "postgres", "POSTGRES_DB": "billing", "BILLING_APP_USER": "billing",
           "BILLING_APP_PASSWORD_FILE": "/dev/null", "PGDATA": str(data)}
    pg.psql(55603, "postgres", "CREATE ROLE billing LOGIN")
    failed = pg.sh(s["restore"].replace(f"{pg.root}/data2/", f"{pg.root}/d/"), env)
    assert failed.returncode != 0 and "FAILED: pg_restore of billing-20261206T120000Z.dump failed" in failed.stdout, failed.stdout
    assert list(data.iterdir()) == []


def test_notes_say_what_is_backed_up_where_and_what_is_lost():
    from conftest import notes, values_file

    text = notes("helm4", "-f", values_file("task1.yaml"), "--set", "backup.enabled=true", "--set", "backup.restore.enabled=true")
    assert 'CronJob billing-backup dumps database billing (pg_dump, custom format) on schedule "0 * * * *"' in text
    assert "onto claim billing-backup, keeping the last 24 (the claim is kept on helm uninstall)" in text
    assert "loses every payment\ncommitted after the newest dump" in text and "log files are not in the dumps" in text
    assert "create job billing-backup-manual --from=cronjob/billing-backup" in text
    assert "an initialised data\ndirectory is never restored over" in text
    assert "Backups:" not in notes("helm4", "-f", values_file("task1.yaml"))
