#!/usr/bin/env python3
"""How long the idempotency-key migration (issue 21) blocks writes on a large ledger, and what a key costs per row.
Run through bench/migration.sh, which builds the release binaries first.

1. A throwaway PostgreSQL (`billing-tempdb --durable`, as bench/run.sh starts it) gets the ledger as it was before
   the migration: the up.sql of every earlier migration, their versions recorded in diesel's
   `__diesel_schema_migrations`, so billing applies only the new one; then --rows rows (1,000,000), VACUUM ANALYZE,
   CHECKPOINT.
2. Without the migration: a writer (pgbench, one client, one row per transaction, bench/pgbench/add.sql, with its
   per-transaction latency log) runs for --window seconds. Its longest transaction is the longest write stall the
   machine causes by itself.
3. With the migration: the same writer for --window seconds; --lead seconds in, the real billing binary starts
   against the database and migrates (its JSON log gives when it connected and when it logged the versions it
   applied, which must be the new migration alone); billing is stopped by PID once /readyz answers 200. The writer's
   longest transaction that overlapped the migration is the write stall it caused.
4. Storage: growth of pg_total_relation_size('transactions') (and of the heap, the primary key and the key's index
   apart) per row for --storage-rows rows without a key, then as many with a random UUID key (36 characters), on the
   migrated ledger; and the same rows in fresh tables of each shape (before the migration; after it without keys;
   after it with keys), which isolates the key's own cost.

Prints a summary and writes everything as JSON (--out). Everything started here is a child recorded by PID and
stopped by PID (bench.py's Children), Ctrl-C included. Python 3 standard library only.
"""

import argparse
import datetime
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (bench/bench.py: the process bookkeeping, tempdb start-up, PostgreSQL tools)

MIGRATIONS = bench.REPO / "billing" / "migrations"
NEW_MIGRATION = "2026-12-06-000001_idempotency_key"
WRITER_SQL = bench.BENCH / "pgbench" / "add.sql"


def version(directory):
    """diesel's version of a migration directory: the part before the first '_', without dashes."""
    return directory.split("_", 1)[0].replace("-", "")


def migrations_before(name):
    dirs = sorted(p.name for p in MIGRATIONS.iterdir() if (p / "up.sql").is_file())
    if name not in dirs:
        raise SystemExit(f"migration: {name} not found under {MIGRATIONS}")
    return dirs[: dirs.index(name)]


def prepare_ledger(db, rows):
    """The ledger before the new migration, as billing left it, holding `rows` rows."""
    earlier = migrations_before(NEW_MIGRATION)
    statements = ["CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, "
                  "run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"]
    for d in earlier:
        statements.append((MIGRATIONS / d / "up.sql").read_text())
        statements.append(f"INSERT INTO __diesel_schema_migrations (version) VALUES ('{version(d)}')")
    db.sql(*statements)
    bench.log(f"ledger before {NEW_MIGRATION}: applied {', '.join(earlier)}; filling {rows} rows")
    t0 = time.monotonic()
    db.sql("INSERT INTO transactions (client_id, amount) "
           f"SELECT (g % 1000 + 1)::text, (g::bigint * 7919) % 1000000 + 1 FROM generate_series(1, {rows}) AS g",
           "VACUUM ANALYZE transactions", "CHECKPOINT", timeout=1800)
    bench.log(f"filled in {time.monotonic() - t0:.1f} s")
    return [version(d) for d in earlier]


def start_writer(db, seconds, workdir, tag):
    """pgbench: one client inserting one row per transaction for `seconds`, logging every transaction."""
    prefix = Path(workdir) / f"writer_{tag}"
    args = [db.pgbench, "-h", db.host, "-p", str(db.port), "-U", db.user, "-n", "-M", "prepared", "-c1", "-j1",
            f"-T{seconds}", "-f", str(WRITER_SQL), "--log", f"--log-prefix={prefix}", db.name]
    proc = bench.CHILDREN.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir)
    return proc, prefix


def finish_writer(proc, prefix, seconds):
    """Waits for the writer; returns its transactions as (start, end, latency) in epoch seconds, by start."""
    try:
        out, err = proc.communicate(timeout=seconds + 300)
    except subprocess.TimeoutExpired:
        bench.CHILDREN.stop(proc)
        raise RuntimeError("the writer (pgbench) did not finish")
    if proc in bench.CHILDREN.procs:
        bench.CHILDREN.procs.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"the writer (pgbench) exited {proc.returncode}:\n{err[-3000:]}")
    txs = []
    for path in glob.glob(f"{prefix}.*"):
        with open(path) as f:
            for line in f:
                # client_id transaction_no time script_no time_epoch time_us: `time` is the latency in µs, the
                # epoch fields the moment the transaction ended.
                fields = line.split()
                if len(fields) >= 6 and fields[2].isdigit():
                    end = int(fields[4]) + int(fields[5]) / 1e6
                    latency = int(fields[2]) / 1e6
                    txs.append((end - latency, end, latency))
    if not txs:
        raise RuntimeError(f"the writer logged no transactions:\n{out[-2000:]}\n{err[-2000:]}")
    txs.sort()
    return txs


def latency_summary(txs):
    lat = sorted(t[2] for t in txs)
    return {"transactions": len(lat), "seconds": txs[-1][1] - txs[0][0],
            "max_ms": lat[-1] * 1000, "p99_ms": bench.percentile(lat, 99) * 1000,
            "p999_ms": bench.percentile(lat, 99.9) * 1000, "p50_ms": bench.percentile(lat, 50) * 1000,
            "over_100ms": sum(1 for x in lat if x > 0.1)}


def parse_time(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run_billing_migration(args, db, workdir):
    """Starts billing against the database, waits for /readyz, stops it by PID; returns its log lines (JSON)."""
    port = bench.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "LOG_", "RUST_LOG"))}
    env.update({"DATABASE_URL": db.url, "LISTEN_ADDR": f"127.0.0.1:{port}", "LOG_FORMAT": "json",
                "RUST_LOG": "info"})
    log_path = Path(workdir) / "billing.log"
    with open(log_path, "w") as log_file:
        started = time.time()
        billing = bench.CHILDREN.start([args.billing_bin], env=env, stdout=log_file, stderr=subprocess.STDOUT)
        ready = None
        deadline = time.monotonic() + args.window
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        ready = time.time()
                        break
            except OSError:
                pass
            if billing.poll() is not None:
                break
            time.sleep(0.05)
        bench.CHILDREN.stop(billing)
    lines = []
    for raw in log_path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            lines.append({"message": raw})
    if ready is None:
        tail = "\n".join(str(ln.get("message")) for ln in lines[-20:])
        raise RuntimeError(f"billing was not ready within the writer's window (raise --window):\n{tail}")
    return lines, started, ready


def stall_during(txs, start, end):
    """The transactions that overlapped [start, end]: the longest of them and how many waited over 100 ms."""
    inside = [t for t in txs if t[1] >= start and t[0] <= end]
    if not inside:
        return {"transactions": 0, "max_ms": None}
    worst = max(inside, key=lambda t: t[2])
    return {"transactions": len(inside), "max_ms": worst[2] * 1000, "over_100ms": sum(1 for t in inside if t[2] > 0.1),
            "longest_started_s": worst[0] - start, "longest_ended_s": worst[1] - start}


def sizes(db, schema):
    """Bytes of schema.transactions: in all (table, indexes, TOAST, free space and visibility maps), its heap, all
    its indexes, the primary key's index, the key's index (0 before the migration)."""
    t = f"{schema}.transactions"
    row = db.sql(f"SELECT pg_total_relation_size('{t}'), pg_relation_size('{t}'), pg_indexes_size('{t}'), "
                 f"pg_relation_size('{t}_pkey'), "
                 f"coalesce(pg_relation_size(to_regclass('{t}_idempotency_key')), 0)")
    total, heap, indexes, pkey, key_index = (int(x) for x in row.split("|"))
    return {"total": total, "heap": heap, "indexes": indexes, "pkey": pkey, "key_index": key_index}


def per_row(before, after, rows):
    return {k: (after[k] - before[k]) / rows for k in after}


ROWS_SQL = ("SELECT (g % 1000 + 1)::text, (g::bigint * 7919) % 1000000 + 1{key} FROM generate_series(1, {n}) AS g")


def storage(db, rows):
    """Bytes per row: on the migrated ledger, and in fresh tables of each shape."""
    out = {}
    s0 = sizes(db, "public")
    db.sql("INSERT INTO transactions (client_id, amount) " + ROWS_SQL.format(key="", n=rows))
    s1 = sizes(db, "public")
    db.sql("INSERT INTO transactions (client_id, amount, idempotency_key) "
           + ROWS_SQL.format(key=", gen_random_uuid()::text", n=rows))
    s2 = sizes(db, "public")
    out["ledger"] = {"unkeyed": per_row(s0, s1, rows), "keyed": per_row(s1, s2, rows), "sizes": [s0, s1, s2]}

    earlier = [(MIGRATIONS / d / "up.sql").read_text() for d in migrations_before(NEW_MIGRATION)]
    new = (MIGRATIONS / NEW_MIGRATION / "up.sql").read_text()
    shapes = {"before_migration": (earlier, ""), "unkeyed": (earlier + [new], ""),
              "keyed": (earlier + [new], ", gen_random_uuid()::text")}
    out["fresh"] = {}
    for schema, (ups, key) in shapes.items():
        name = f"size_{schema}"
        db.sql(f"CREATE SCHEMA {name}; SET search_path = {name}; " + "\n".join(ups))
        empty = sizes(db, name)
        columns = "client_id, amount" + (", idempotency_key" if key else "")
        db.sql(f"INSERT INTO {name}.transactions ({columns}) " + ROWS_SQL.format(key=key, n=rows))
        full = sizes(db, name)
        out["fresh"][schema] = dict(per_row(empty, full, rows), sizes=[empty, full])
    out["fresh"]["key_cost"] = {k: out["fresh"]["keyed"][k] - out["fresh"]["unkeyed"][k]
                                for k in ("total", "heap", "indexes", "pkey", "key_index")}
    out["fresh"]["unkeyed_vs_before"] = {k: out["fresh"]["unkeyed"][k] - out["fresh"]["before_migration"][k]
                                         for k in ("total", "heap", "indexes", "pkey", "key_index")}
    out["ledger"]["key_cost"] = {k: out["ledger"]["keyed"][k] - out["ledger"]["unkeyed"][k]
                                 for k in ("total", "heap", "indexes", "pkey", "key_index")}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the ledger before the migration (1000000)")
    ap.add_argument("--window", type=int, default=20, help="seconds the writer runs, with and without (20)")
    ap.add_argument("--lead", type=int, default=5, help="seconds of writing before billing starts (5)")
    ap.add_argument("--storage-rows", type=int, default=100_000, help="rows per storage measurement (100000)")
    ap.add_argument("--billing-bin", default=str(bench.BILLING), help="service binary (default: the release build)")
    ap.add_argument("--label", default="", help="free text stored in the JSON")
    ap.add_argument("--out", default=str(bench.BENCH / "results" / "migration-latest.json"), help="JSON output")
    args = ap.parse_args()
    if args.lead >= args.window:
        raise SystemExit("migration: --lead must be shorter than --window")

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="billing-migration-") as workdir:
        try:
            db = bench.Database(bench.start_tempdb(workdir))
            recorded = prepare_ledger(db, args.rows)
            info = bench.machine(db)
            load_start = bench.load_avg()

            bench.log(f"without the migration: the writer for {args.window} s")
            proc, prefix = start_writer(db, args.window, workdir, "baseline")
            baseline = latency_summary(finish_writer(proc, prefix, args.window))
            bench.log(f"  {baseline['transactions']} inserts, longest {baseline['max_ms']:.1f} ms")

            rows_before = db.count()
            bench.log(f"with the migration: the writer for {args.window} s, billing starting {args.lead} s in "
                      f"({rows_before} rows)")
            proc, prefix = start_writer(db, args.window, workdir, "migration")
            time.sleep(args.lead)
            lines, billing_started, ready = run_billing_migration(args, db, workdir)
            txs = finish_writer(proc, prefix, args.window)

            def when(prefix_text):
                hit = next((ln for ln in lines if str(ln.get("message", "")).startswith(prefix_text)), None)
                if hit is None or "timestamp" not in hit:
                    raise RuntimeError(f"billing logged no line starting {prefix_text!r}:\n"
                                       + "\n".join(str(ln.get("message")) for ln in lines[-20:]))
                return parse_time(hit["timestamp"]), hit["message"]

            connected, _ = when("connected to PostgreSQL")
            applied_at, applied_msg = when("applied migrations: ")
            applied = applied_msg.split(": ", 1)[1].split(", ")
            if applied != [version(NEW_MIGRATION)]:
                raise RuntimeError(f"billing applied {applied}, expected only {version(NEW_MIGRATION)}")
            history = db.sql("SELECT string_agg(version, ',' ORDER BY version) FROM __diesel_schema_migrations")
            before = [t for t in txs if t[1] < billing_started]
            migration = {
                "rows_in_ledger": rows_before,
                "applied": applied,
                "history": history.split(","),
                "earlier_recorded": recorded,
                "connected_to_applied_s": applied_at - connected,
                "billing_start_to_ready_s": ready - billing_started,
                "stall": stall_during(txs, connected, applied_at),
                "writer": latency_summary(txs),
                "writer_before_billing": latency_summary(before) if before else None,
            }
            stall = migration["stall"]
            bench.log(f"  billing applied {applied} in {migration['connected_to_applied_s'] * 1000:.0f} ms "
                      f"(connected -> logged); longest insert overlapping it {stall['max_ms']:.1f} ms; "
                      f"longest without the migration {baseline['max_ms']:.1f} ms")

            bench.log(f"storage: {args.storage_rows} rows without a key, then with a UUID key")
            store = storage(db, args.storage_rows)
            load_end = bench.load_avg()
        finally:
            bench.CHILDREN.stop_all()

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "label": args.label, "machine": info,
        "config": {"rows": args.rows, "window_s": args.window, "lead_s": args.lead,
                   "storage_rows": args.storage_rows, "billing_bin": args.billing_bin,
                   "writer": "pgbench -c1 -j1 -M prepared, bench/pgbench/add.sql", "durable": True},
        "load_avg_start": load_start, "load_avg_end": load_end, "wall_s": round(time.monotonic() - started, 1),
        "baseline": baseline, "migration": migration, "storage": store,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")

    led, fresh = store["ledger"], store["fresh"]
    print(f"\nidempotency-key migration on {rows_before} rows — {info['cpu']}, {info['cores']} cores, PostgreSQL "
          f"{info['postgresql']} (fsync {info['fsync']}), commit {info['git_commit'][:7]}"
          f"{' (dirty)' if info['git_dirty'] else ''}, load average {load_start[0]:.2f} -> {load_end[0]:.2f}")
    print(f"  migration: {migration['connected_to_applied_s'] * 1000:.0f} ms from billing's connection to its "
          f"'applied migrations' line; billing ready {migration['billing_start_to_ready_s']:.2f} s after its start")
    print(f"  longest write during the migration: {stall['max_ms']:.0f} ms ({stall['transactions']} inserts "
          f"overlapped it, {stall['over_100ms']} over 100 ms)")
    print(f"  longest write without it: {baseline['max_ms']:.0f} ms over {baseline['transactions']} inserts in "
          f"{args.window} s (p99 {baseline['p99_ms']:.1f} ms, p99.9 {baseline['p999_ms']:.1f} ms)")
    print(f"  storage per row on the migrated ledger: {led['unkeyed']['total']:.1f} B without a key, "
          f"{led['keyed']['total']:.1f} B with a UUID key: the key costs {led['key_cost']['total']:.1f} B "
          f"(heap {led['key_cost']['heap']:.1f}, its index {led['key_cost']['key_index']:.1f})")
    print(f"  storage per row in fresh tables: before the migration {fresh['before_migration']['total']:.1f} B, "
          f"after it without a key {fresh['unkeyed']['total']:.1f} B, with a UUID key {fresh['keyed']['total']:.1f} B "
          f"(key: heap {fresh['key_cost']['heap']:.1f}, index {fresh['key_cost']['key_index']:.1f})")
    print(f"\nwritten to {out} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        bench.CHILDREN.stop_all()
