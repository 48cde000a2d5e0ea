"""billing against hostile clients (issue 9): the figures its note asks for, on the release build, over loopback.

  python3 bench/hostile.py [--billing-bin PATH] [--out bench/results/hostile-latest.json]

Scenarios, each on a fresh billing process against one throwaway PostgreSQL (billing-tempdb, durable):
  idle        N idle TCP connections plus N half-sent requests held open, then /ping and /add timed one at a time;
  headers     1,000 clients each sending an unterminated 400 KB header, in 8 KiB pieces; RSS before, at its
              peak, and after they left;
  listings    20 clients request /getall of 300,000 rows and never read; /add and /readyz timed one at a time.

Not a test, never run by CI: it reports figures. Everything it starts is a child stopped by PID (bench.py's
Children); all traffic goes to 127.0.0.1. Python 3 standard library only. Run through bench/run.sh's build first
(`cargo build --release -p billing -p billing-testkit --bins`).
"""

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the sibling module: process ownership, tempdb and billing start-up)


def rss_mib(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def timed(url, method="GET"):
    started = time.monotonic()
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, (time.monotonic() - started) * 1000


def series(base, n, path, method):
    results = [timed(base + path.format(i=i), method) for i in range(n)]
    ms = sorted(t for _, t in results)
    return {"statuses": sorted({s for s, _ in results}), "count": n, "median_ms": round(statistics.median(ms), 2),
            "max_ms": round(ms[-1], 2)}


async def hold(port, n, payload):
    """n connections to port, each having sent `payload` (maybe nothing), kept open until cancelled."""
    writers = []
    for _ in range(n):
        _, w = await asyncio.open_connection("127.0.0.1", port)
        if payload:
            w.write(payload)
            await w.drain()
        writers.append(w)
    return writers


def close_all(writers):
    for w in writers:
        w.close()


async def idle_scenario(base, port, n):
    idle = await hold(port, n, b"")
    half = await hold(port, n, b"POST /add?client_id=x&amount=1 HTTP/1.1\r\nHost: billing\r\nX-Slow: ")
    await asyncio.sleep(1)
    loop = asyncio.get_running_loop()
    ping = await loop.run_in_executor(None, series, base, 20, "/ping", "GET")
    add = await loop.run_in_executor(None, series, base, 20, "/add?client_id=idle{i}&amount=1", "POST")
    close_all(idle + half)
    return {"idle_connections": n, "half_sent_connections": n, "ping": ping, "add": add}


async def header_client(port, size, piece):
    try:
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /ping HTTP/1.1\r\nHost: billing\r\nX-Big: ")
        sent = 0
        while sent < size:
            w.write(b"a" * piece)
            await w.drain()
            sent += piece
        return w
    except OSError:
        return None  # the server answered 431 and closed: what it should do


async def headers_scenario(port, pid, clients, size):
    before = rss_mib(pid)
    writers = await asyncio.gather(*(header_client(port, size, 8192) for _ in range(clients)))
    during = rss_mib(pid)
    close_all([w for w in writers if w])
    await asyncio.sleep(2)
    after = rss_mib(pid)
    return {"clients": clients, "header_bytes_each": size, "rss_before_mib": round(before["VmRSS"], 1),
            "rss_peak_mib": round(during["VmHWM"], 1), "rss_after_mib": round(after["VmRSS"], 1)}


async def listings_scenario(base, port, db, stalled):
    db.sql("INSERT INTO transactions (client_id, amount) SELECT 'c' || g, g FROM generate_series(1, 300000) g",
           "VACUUM ANALYZE transactions")
    writers = await hold(port, stalled, b"GET /getall HTTP/1.1\r\nHost: billing\r\n\r\n")
    await asyncio.sleep(1)
    loop = asyncio.get_running_loop()
    add = await loop.run_in_executor(None, series, base, 50, "/add?client_id=l{i}&amount=1", "POST")
    ready = await loop.run_in_executor(None, series, base, 20, "/readyz", "GET")
    close_all(writers)
    return {"stalled_readers": stalled, "rows": 300_000, "add": add, "readyz": ready}


def fresh_billing(args, workdir):
    db, billing, base, _ = bench.start_services(args, workdir)
    return db, billing, base, int(base.rsplit(":", 1)[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--billing-bin", default=str(bench.BILLING))
    ap.add_argument("--connections", type=int, default=2000, help="idle and half-sent connections, each (2000)")
    ap.add_argument("--out", default=str(bench.BENCH / "results" / "hostile-latest.json"))
    args = ap.parse_args()
    args.billing_env = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = {"billing_bin": args.billing_bin, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    # Each scenario on a process of its own, so that one's memory is not the next one's baseline.
    for name, scenario in [
        ("headers", lambda db, billing, base, port: headers_scenario(port, billing.pid, 1000, 400 * 1024)),
        ("idle", lambda db, billing, base, port: idle_scenario(base, port, args.connections)),
        ("listings", lambda db, billing, base, port: listings_scenario(base, port, db, 20)),
    ]:
        with tempfile.TemporaryDirectory(prefix="billing-hostile-") as workdir:
            db, billing, base, port = fresh_billing(args, workdir)
            result[name] = asyncio.run(scenario(db, billing, base, port))
            result[name]["rss_end_mib"] = round(rss_mib(billing.pid)["VmRSS"], 1)
            bench.log(f"{name}: {result[name]}")
            bench.CHILDREN.stop_all()
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        bench.CHILDREN.stop_all()
