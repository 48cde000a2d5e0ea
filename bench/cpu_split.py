#!/usr/bin/env python3
"""Where one request's CPU goes: billing, the PostgreSQL processes and wrk, each read from /proc around one wrk run,
then the same for pgbench running the case's SQL (pgbench's client, and the whole machine, since its backends come
and go with its connections). What docs/benchmarks.md's "Where a /get goes now" is measured with.

    python3 bench/cpu_split.py [--case get|add] [--duration 8] [--billing-bin target/release/billing] [NAME=VALUE ...]

NAME=VALUE pairs are set in billing's environment (for example TOKIO_WORKER_THREADS=1). With --perf FILE, `perf
record` samples billing during the wrk run. Needs the release binaries (billing, billing-tempdb), wrk and pgbench;
every process it starts is stopped by PID on exit; all traffic is on 127.0.0.1; each load lasts --duration seconds.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def machine_busy_seconds():
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(command, billing_pid, tempdb_pid, perf=None, duration=0):
    """Runs `command` to its end; returns its output and the CPU seconds of billing, PostgreSQL, the command itself
    (sampled until it exits) and the whole machine meanwhile."""
    pg_before = {p: cpu_seconds(p) for p in descendants(tempdb_pid)}
    billing_before, machine_before = cpu_seconds(billing_pid), machine_busy_seconds()
    load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = None
    if perf:
        sampler = subprocess.Popen(["perf", "record", "-F", "1000", "-g", "-p", str(billing_pid), "-o", perf, "--",
                                    "sleep", str(max(1, duration - 2))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    own = 0.0
    while load.poll() is None:
        own = max(own, cpu_seconds(load.pid))
        time.sleep(0.05)
    output = load.stdout.read()
    if sampler:
        sampler.wait()
    pg = sum(cpu_seconds(p) - pg_before.get(p, 0.0) for p in descendants(tempdb_pid))
    return output, cpu_seconds(billing_pid) - billing_before, pg, own, machine_busy_seconds() - machine_before


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=["get", "add"], default="get")
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rows", type=int, default=100_000, help="table size for get (ids 1..rows)")
    ap.add_argument("--billing-bin", default=str(ROOT / "target/release/billing"))
    ap.add_argument("--perf", help="perf.data path: sample billing during the wrk run")
    ap.add_argument("env", nargs="*", help="NAME=VALUE for billing's environment")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="billing-cpu-split-"))
    started = []
    try:
        tempdb = subprocess.Popen([str(ROOT / "target/release/billing-tempdb"), "--durable"],
                                  stdout=open(work / "tempdb.out", "w"), stderr=open(work / "tempdb.err", "w"))
        started.append(tempdb)
        url = None
        for _ in range(600):
            text = (work / "tempdb.out").read_text()
            if "DATABASE_URL=" in text:
                url = text.split("DATABASE_URL=", 1)[1].split()[0]
                break
            if tempdb.poll() is not None:
                break
            time.sleep(0.1)
        if url is None:
            raise SystemExit("billing-tempdb did not start:\n" + (work / "tempdb.err").read_text())
        port = free_port()
        env = dict(os.environ, DATABASE_URL=url, LISTEN_ADDR=f"127.0.0.1:{port}", LOG_FILE=str(work / "app.log"))
        env.update(item.split("=", 1) for item in args.env)
        billing = subprocess.Popen([args.billing_bin], env=env, stdout=open(work / "billing.log", "w"),
                                   stderr=subprocess.STDOUT)
        started.append(billing)
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if billing.poll() is not None:
                raise SystemExit("billing exited:\n" + (work / "billing.log").read_text()[-3000:])
            time.sleep(0.1)
        psql = next(Path("/usr/lib/postgresql").glob("*/bin/psql"))
        for statement in ["TRUNCATE transactions RESTART IDENTITY",
                          "INSERT INTO transactions (client_id, amount) SELECT (g % 1000 + 1)::text, "
                          f"(g * 7919) % 1000000 + 1 FROM generate_series(1, {args.rows}) AS g",
                          "VACUUM ANALYZE transactions", "CHECKPOINT"]:
            subprocess.run([str(psql), url, "-X", "-q", "-c", statement], check=True)
        script = work / "case.lua"
        script.write_text((ROOT / "bench/wrk/common.lua").read_text() + "\n"
                          + (ROOT / f"bench/wrk/{args.case}.lua").read_text())
        wrk = ["wrk", "-t2", "-c32", f"-d{args.duration}s", "--timeout", "30s", "-s", str(script),
               base + ("/add" if args.case == "add" else ""), "--", "1", str(args.rows)]
        subprocess.run(wrk[:3] + ["-d2s"] + wrk[4:], capture_output=True)  # warm-up
        out, own_cpu, pg_cpu, wrk_cpu, busy = measure(wrk, billing.pid, tempdb.pid, args.perf, args.duration)
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        per = lambda seconds: seconds * 1e6 / requests
        print(f"service: {requests / args.duration:.0f}/s; CPU µs per request: billing {per(own_cpu):.1f}, "
              f"PostgreSQL {per(pg_cpu):.1f}, wrk {per(wrk_cpu):.1f}; machine busy {per(busy):.1f}")
        u = urllib.parse.urlparse(url)
        sql = {"get": "get.sql", "add": "add.sql"}[args.case]
        pgbench = [str(next(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))), "-h", u.hostname, "-p",
                   str(u.port), "-U", u.username, "-n", "-M", "prepared", "-c32", "-j2", f"-T{args.duration}",
                   "-f", str(ROOT / "bench/pgbench" / sql), "-D", "id_min=1", "-D", f"id_max={args.rows}",
                   u.path.lstrip("/")]
        out, _, _, client_cpu, busy = measure(pgbench, billing.pid, tempdb.pid)
        tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
        transactions = tps * args.duration
        print(f"pgbench: {tps:.0f}/s; CPU µs per transaction: pgbench's client "
              f"{client_cpu * 1e6 / transactions:.1f}; machine busy {busy * 1e6 / transactions:.1f} "
              "(PostgreSQL's backends end with pgbench's connections: the machine's figure is theirs and the client's)")
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
