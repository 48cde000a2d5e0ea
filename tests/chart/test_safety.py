"""Issue 10 §1 and §3: the PostgreSQL volume lock and liveness probe, run for
real with /bin/sh and flock (stand-ins only for the server itself and for
pg_isready), and the billing pod's disruption, spreading, autoscaling and
shutdown settings as rendered by the real Helm."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import container, env_of, render, render_error, values_file


@pytest.fixture(autouse=True)
def _flock():
    if shutil.which("flock") is None:
        pytest.fail("these tests run the chart's volume lock with flock (util-linux), which is not installed", pytrace=False)


def pg_container(helm="helm3", **sets) -> dict:
    r = render(helm, sets=sets or None)
    return container(r.get("Deployment", "billing-postgresql")["spec"]["template"]["spec"], "postgresql")


def lock_script(tmp_path: Path) -> str:
    c = pg_container()
    assert c["command"] == ["/bin/sh", "-c"]
    script = c["args"][0]
    assert '"/var/lib/postgresql/data/postmaster.flock"' in script
    return script.replace("/var/lib/postgresql/data/postmaster.flock", str(tmp_path / "postmaster.flock"))


def fake_server(tmp_path: Path) -> dict:
    """A PATH whose docker-entrypoint.sh stands in for the server: it records
    when it started, stays up until its stop file appears, starts a child that
    outlives it by a second (as a backend may), and records when it exits."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker-entrypoint.sh").write_text(
        "#!/bin/sh\n"
        'name=$SERVER_NAME\n'
        'echo "$(date +%s.%N) start" >> "$SERVER_LOG.$name"\n'
        'while [ ! -e "$SERVER_LOG.$name.stop" ]; do sleep 0.05; done\n'
        "sleep 1 &\n"
        'echo "$(date +%s.%N) exit" >> "$SERVER_LOG.$name"\n'
    )
    (bin_dir / "docker-entrypoint.sh").chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    env["SERVER_LOG"] = str(tmp_path / "server")
    return env


def start(script: str, env: dict, name: str) -> subprocess.Popen:
    return subprocess.Popen(["/bin/sh", "-c", script], env={**env, "SERVER_NAME": name},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def events(tmp_path: Path, name: str) -> dict[str, float]:
    path = tmp_path / f"server.{name}"
    if not path.exists():
        return {}
    return {line.split()[1]: float(line.split()[0]) for line in path.read_text().splitlines()}


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_a_second_server_starts_only_after_the_first_and_its_children_exited(tmp_path):
    script, env = lock_script(tmp_path), fake_server(tmp_path)
    old = start(script, env, "old")
    assert wait_for(lambda: "start" in events(tmp_path, "old"))
    new = start(script, env, "new")
    time.sleep(1.5)
    # The replacement waits: its server has not started while the old one runs.
    assert "start" not in events(tmp_path, "new")
    (tmp_path / "server.old.stop").touch()
    assert old.wait(10) == 0
    assert wait_for(lambda: "start" in events(tmp_path, "new"))
    (tmp_path / "server.new.stop").touch()
    assert new.wait(10) == 0
    out_old, out_new = old.stdout.read(), new.stdout.read()
    assert "volume-lock: acquired" in out_old and "at once" in out_old
    assert "volume-lock: waiting for" in out_new and "another PostgreSQL server still runs on this volume" in out_new
    assert "after waiting" in out_new
    old_ev, new_ev = events(tmp_path, "old"), events(tmp_path, "new")
    # After the old server's exit, and after the child it left behind (1 s) exited too.
    assert new_ev["start"] >= old_ev["exit"] + 0.9, (old_ev, new_ev)


def test_the_lock_is_free_again_once_the_server_exited(tmp_path):
    script, env = lock_script(tmp_path), fake_server(tmp_path)
    first = start(script, env, "first")
    assert wait_for(lambda: "start" in events(tmp_path, "first"))
    (tmp_path / "server.first.stop").touch()
    assert first.wait(10) == 0
    time.sleep(1.2)  # the child it left behind
    second = start(script, env, "second")
    assert wait_for(lambda: "start" in events(tmp_path, "second"))
    (tmp_path / "server.second.stop").touch()
    assert second.wait(10) == 0
    assert "at once" in second.stdout.read()


def test_a_waiting_replacement_stops_at_once_on_its_stop_signal(tmp_path):
    script, env = lock_script(tmp_path), fake_server(tmp_path)
    old = start(script, env, "old")
    assert wait_for(lambda: "start" in events(tmp_path, "old"))
    new = start(script, env, "new")
    time.sleep(1)
    t0 = time.monotonic()
    new.send_signal(signal.SIGINT)  # the postgres image's STOPSIGNAL
    assert new.wait(5) == 143
    assert time.monotonic() - t0 < 3
    assert "start" not in events(tmp_path, "new")
    (tmp_path / "server.old.stop").touch()
    assert old.wait(10) == 0


def test_volume_lock_can_be_turned_off_and_names_a_file_beside_pgdata(helm):
    c = pg_container(helm)
    script = c["args"][0]
    assert "exec 9>>" in script and "exec docker-entrypoint.sh postgres" in script
    pgdata = env_of(c)["PGDATA"]["value"]
    assert f"{pgdata}/" not in script  # beside PGDATA, not in it
    c = pg_container(helm, **{"postgresql.volumeLock.enabled": "false"})
    assert "command" not in c and "args" not in c
    c = pg_container(helm, **{"postgresql.volumeLock.file": "other.lock"})
    assert '"/var/lib/postgresql/data/other.lock"' in c["args"][0]


def run_liveness(tmp_path: Path, code: int) -> int:
    c = pg_container()
    cmd = c["livenessProbe"]["exec"]["command"]
    bin_dir = tmp_path / f"bin{code}"
    bin_dir.mkdir()
    (bin_dir / "pg_isready").write_text(f"#!/bin/sh\nexit {code}\n")
    (bin_dir / "pg_isready").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(cmd, env=env, timeout=10, check=False).returncode


def test_liveness_passes_a_server_in_recovery_and_fails_a_dead_one(tmp_path):
    # pg_isready: 0 accepting, 1 rejecting (startup, crash recovery, shutdown), 2 no response, 3 no attempt.
    assert run_liveness(tmp_path, 0) == 0
    assert run_liveness(tmp_path, 1) == 0
    assert run_liveness(tmp_path, 2) != 0
    assert run_liveness(tmp_path, 3) != 0


def test_readiness_and_startup_stay_plain_pg_isready(helm):
    c = pg_container(helm)
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["exec"]["command"][0] == "pg_isready", probe
    assert "[ $? -le 1 ]" in c["livenessProbe"]["exec"]["command"][-1]


def test_postgresql_grace_period(helm):
    r = render(helm)
    pod = r.get("Deployment", "billing-postgresql")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60


# ---------------------------------------------------------------- billing pods


def pod_spec(r, kind="Deployment", name="billing"):
    return r.get(kind, name)["spec"]["template"]["spec"]


@pytest.mark.parametrize(("values", "kind", "name"), [(("task1.yaml",), "Deployment", "billing"),
                                                      (("task2.yaml",), "StatefulSet", "billing-stateful")])
def test_pod_disruption_budget_in_both_modes(helm, values, kind, name):
    r = render(helm, values=values)
    pdb = r.get("PodDisruptionBudget", name)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": r.get(kind, name)["spec"]["selector"]["matchLabels"]}}
    assert "app.kubernetes.io/version" not in pdb["spec"]["selector"]["matchLabels"]
    r = render(helm, values=values, sets={"podDisruptionBudget.maxUnavailable": "null", "podDisruptionBudget.minAvailable": "50%"})
    assert r.get("PodDisruptionBudget", name)["spec"]["minAvailable"] == "50%"
    assert "maxUnavailable" not in r.get("PodDisruptionBudget", name)["spec"]
    assert not render(helm, values=values, sets={"podDisruptionBudget.enabled": "false"}).all("PodDisruptionBudget")


def test_pod_disruption_budget_takes_one_setting(helm):
    err = render_error(helm, "--set", "podDisruptionBudget.minAvailable=1")
    assert "podDisruptionBudget sets both minAvailable and maxUnavailable" in err
    err = render_error(helm, "--set", "podDisruptionBudget.maxUnavailable=null")
    assert "neither minAvailable nor maxUnavailable is set" in err


def test_topology_spread_default_schedules_on_one_node_and_selects_the_pods(helm):
    for values, kind, name in ((("task1.yaml",), "Deployment", "billing"), (("task2.yaml",), "StatefulSet", "billing-stateful")):
        r = render(helm, values=values)
        (c,) = pod_spec(r, kind, name)["topologySpreadConstraints"]
        assert c["whenUnsatisfiable"] == "ScheduleAnyway"  # never leaves a pod pending on a one-node minikube
        assert c["topologyKey"] == "kubernetes.io/hostname"
        assert c["labelSelector"] == {"matchLabels": r.get(kind, name)["spec"]["selector"]["matchLabels"]}
    r = render(helm, "--set-json", 'topologySpreadConstraints=[{"maxSkew":2,"topologyKey":"topology.kubernetes.io/zone","whenUnsatisfiable":"DoNotSchedule","labelSelector":{"matchLabels":{"x":"y"}}}]')
    (c,) = pod_spec(r)["topologySpreadConstraints"]
    assert c["labelSelector"] == {"matchLabels": {"x": "y"}}
    assert "topologySpreadConstraints" not in pod_spec(render(helm, "--set-json", "topologySpreadConstraints=[]"))


def test_hpa_only_in_deployment_mode_and_off_by_default(helm):
    assert not render(helm).all("HorizontalPodAutoscaler")
    r = render(helm, sets={"autoscaling.enabled": "true", "autoscaling.maxReplicas": "3"})
    hpa = r.get("HorizontalPodAutoscaler", "billing")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "billing"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 80}
    # The Deployment leaves its replica count to the autoscaler.
    assert "replicas" not in r.get("Deployment", "billing")["spec"]
    err = render_error(helm, "-f", values_file("task2.yaml"), "--set", "autoscaling.enabled=true")
    assert "autoscaling.enabled is true but workload.kind is StatefulSet" in err
    err = render_error(helm, "--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=4")
    assert "autoscaling.minReplicas (4) is larger than autoscaling.maxReplicas (3)" in err


def test_connection_budget_counts_surge_pods_and_max_replicas(helm):
    # 4 replicas + 1 surge pod x 21 = 105: refused although 4 x 21 = 84 would fit.
    err = render_error(helm, "--set", "workload.replicas=4")
    assert "5 pods at once (workload.replicas 4 + 1 surge pods of a rolling update)" in err
    assert "= 105 connections" in err
    # A StatefulSet replaces its pods one by one: no surge.
    render(helm, values=("task2.yaml",), sets={"workload.replicas": "4"})
    err = render_error(helm, "--set", "autoscaling.enabled=true", "--set", "autoscaling.maxReplicas=5")
    assert "(autoscaling.maxReplicas 5 + 2 surge pods" in err


def test_prestop_pause_and_grace_period(helm):
    for values, kind, name in ((("task1.yaml",), "Deployment", "billing"), (("task2.yaml",), "StatefulSet", "billing-stateful")):
        spec = pod_spec(render(helm, values=values), kind, name)
        c = container(spec, "billing")
        assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}
        assert env_of(c)["SHUTDOWN_TIMEOUT_SECS"]["value"] == "20"
        assert spec["terminationGracePeriodSeconds"] == 30 > 5 + 20
    c = container(pod_spec(render(helm, sets={"preStopSleepSeconds": "0"})), "billing")
    assert "lifecycle" not in c
    err = render_error(helm, "--set", "preStopSleepSeconds=10", "--set", "config.shutdownTimeoutSecs=20")
    assert "terminationGracePeriodSeconds (30) must be larger than preStopSleepSeconds (10) + config.shutdownTimeoutSecs (20) = 30" in err
    err = render_error(helm, "--set-json", 'extraEnv=[{"name":"SHUTDOWN_TIMEOUT_SECS","value":"5"}]')
    assert "set config.shutdownTimeoutSecs instead" in err
