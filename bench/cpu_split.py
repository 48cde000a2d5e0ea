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
import sys
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import bench  # noqa: E402  (bench.py beside this file)
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
    ap.add_argument("billing_env", nargs="*", metavar="NAME=VALUE", help="set in billing's environment")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="billing-cpu-split-"))
    try:
        # bench.py's start-up: the same throwaway PostgreSQL and billing, its children stopped by PID.
        db, billing, base, _ = bench.start_services(args, work)
        tempdb = bench.CHILDREN.procs[0]
        db.fill(args.rows)
        script = work / "case.lua"
        script.write_text((ROOT / "bench/wrk/common.lua").read_text() + "\n"
                          + (ROOT / f"bench/wrk/{args.case}.lua").read_text())
        wrk = ["wrk", "-t2", "-c32", f"-d{args.duration}s", "--timeout", "30s", "-s", str(script), base, "--", "1",
               str(args.rows)]
        subprocess.run(wrk[:3] + ["-d2s"] + wrk[4:], capture_output=True)  # warm-up
        out, own_cpu, pg_cpu, wrk_cpu, busy = measure(wrk, billing.pid, tempdb.pid, args.perf, args.duration)
        requests = int(re.search(r"(\d+) requests in", out).group(1))

        def per(seconds):
            return seconds * 1e6 / requests

        print(f"service: {requests / args.duration:.0f}/s; CPU µs per request: billing {per(own_cpu):.1f}, "
              f"PostgreSQL {per(pg_cpu):.1f}, wrk {per(wrk_cpu):.1f}; machine busy {per(busy):.1f}")
        sql = {"get": "get.sql", "add": "add.sql"}[args.case]
        pgbench = [db.pgbench, "-h", db.host, "-p", str(db.port), "-U", db.user, "-n", "-M", "prepared", "-c32",
                   "-j2", f"-T{args.duration}", "-f", str(ROOT / "bench/pgbench" / sql), "-D", "id_min=1", "-D",
                   f"id_max={args.rows}", db.name]
        out, _, _, client_cpu, busy = measure(pgbench, billing.pid, tempdb.pid)
        tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
        transactions = tps * args.duration
        print(f"pgbench: {tps:.0f}/s; CPU µs per transaction: pgbench's client "
              f"{client_cpu * 1e6 / transactions:.1f}; machine busy {busy * 1e6 / transactions:.1f} "
              "(PostgreSQL's backends end with pgbench's connections: the machine's figure is theirs and the client's)")
    finally:
        bench.CHILDREN.stop_all()


if __name__ == "__main__":
    main()
