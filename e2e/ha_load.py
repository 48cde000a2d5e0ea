#!/usr/bin/env python3
"""Payments under a failover, and what became of each (issue 11 §4; run by e2e/ha.sh).

  ha_load.py load --url http://ADDR:8080 --clients 32 --seconds 40 --prefix ha-pod --out F.jsonl
      CLIENTS threads each send POST /add one after another (a new payment each time, never a retry) for SECONDS,
      and write one JSON line per request: its client_id, when it was sent and answered (Unix seconds), the HTTP
      status (0 when no answer came: a reset or a timeout) and the answer's text. Bounded: no request is sent after
      SECONDS, and each waits at most --timeout seconds.

  ha_load.py report --results F.jsonl --committed C.txt --kill-at T [--json OUT]
      C.txt holds the client_ids the ledger has afterwards, one per line. Prints what became of the payments and
      exits 1 if an acknowledged payment is missing, a payment told "nothing was recorded" is there, or any request
      got another answer than 201 or billing's 503 ("may or may not be recorded", "nothing was recorded"): a 500,
      any other status or text, or no answer at all (billing stays up through a failover and answers every
      request within its own time-outs, well inside --timeout).

Standard library only: it runs on the host that runs the cluster, against the billing Service's address.
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse

IN_DOUBT = "may or may not"
NOTHING = "nothing was recorded"


def load(args):
    url = urllib.parse.urlsplit(args.url)
    deadline = time.time() + args.seconds
    lock = threading.Lock()
    out = open(args.out, "w", encoding="utf-8")

    def client(n):
        conn = None
        seq = 0
        while time.time() < deadline:
            seq += 1
            cid = f"{args.prefix}-{n:02d}-{seq:06d}"
            sent = time.time()
            status, text = 0, ""
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=args.timeout)
                conn.request("POST", f"/add?client_id={cid}&amount=1")
                resp = conn.getresponse()
                status, text = resp.status, resp.read().decode("utf-8", "replace")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                text = f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                conn = None
            answered = time.time()
            with lock:
                out.write(json.dumps({"client_id": cid, "sent": sent, "answered": answered,
                                      "status": status, "text": text[:300]}) + "\n")
            if status != 201:
                # A real client backs off before its next payment; 50 ms keeps a refused connection from
                # becoming a busy loop.
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + args.timeout + 10)
    out.close()
    return 0


def report(args):
    rows = [json.loads(line) for line in open(args.results, encoding="utf-8") if line.strip()]
    committed = {line.strip() for line in open(args.committed, encoding="utf-8") if line.strip()}
    kill = args.kill_at
    acked, in_doubt, nothing, no_answer, other = [], [], [], [], []
    for r in rows:
        if r["status"] == 201:
            acked.append(r)
        elif r["status"] == 503 and IN_DOUBT in r["text"]:
            in_doubt.append(r)
        elif r["status"] == 503 and NOTHING in r["text"]:
            nothing.append(r)
        elif r["status"] == 0:
            no_answer.append(r)
        else:
            other.append(r)
    missing = [r["client_id"] for r in acked if r["client_id"] not in committed]
    lied = [r["client_id"] for r in nothing if r["client_id"] in committed]
    after = [r for r in acked if r["sent"] >= kill]
    first_ok = min((r["answered"] for r in after), default=None)
    last_ok_before = max((r["answered"] for r in acked if r["answered"] < kill), default=None)
    # The outage: the longest stretch after the kill with no 201 answered (a smart shutdown, say, keeps serving
    # for a while first, so the first 201 after the kill is not where the service came back).
    times = sorted([kill] + [r["answered"] for r in acked if r["answered"] >= kill])
    gap_start, gap_end = max(zip(times, times[1:]), key=lambda g: g[1] - g[0], default=(kill, kill))
    result = {
        "requests": len(rows),
        "acknowledged": len(acked),
        "acknowledged_missing": len(missing),
        "in_doubt": len(in_doubt),
        "in_doubt_committed": sum(r["client_id"] in committed for r in in_doubt),
        "nothing_recorded": len(nothing),
        "nothing_recorded_but_committed": len(lied),
        "no_answer": len(no_answer),
        "no_answer_committed": sum(r["client_id"] in committed for r in no_answer),
        "other_answers": len(other),
        "other_answers_committed": sum(r["client_id"] in committed for r in other),
        "other_examples": sorted({f'{r["status"]} {r["text"][:120]}' for r in other})[:5],
        "error_examples": sorted({f'{r["status"]} {r["text"][:160]}' for r in in_doubt + nothing + no_answer})[:6],
        "seconds_kill_to_first_201": None if first_ok is None else round(first_ok - kill, 2),
        "longest_stretch_without_201_after_kill_s": round(gap_end - gap_start, 2),
        "seconds_kill_to_first_201_after_that_stretch": round(gap_end - kill, 2),
        "seconds_last_201_before_kill_to_kill": None if last_ok_before is None else round(kill - last_ok_before, 2),
        "payments_per_second_before_kill": round(
            sum(r["answered"] < kill for r in acked) / max(kill - min(r["sent"] for r in rows), 0.001), 1)
        if rows else 0,
    }
    for key, value in result.items():
        print(f"  {key}: {value}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    bad = []
    if missing:
        bad.append(f"{len(missing)} acknowledged payments are not in the ledger, e.g. {missing[:5]}")
    if lied:
        bad.append(f"{len(lied)} payments told 'nothing was recorded' are in the ledger, e.g. {lied[:5]}")
    if not acked:
        bad.append("no payment was acknowledged at all")
    if first_ok is None:
        bad.append("no payment sent after the kill was acknowledged")
    if no_answer:
        bad.append(f"{len(no_answer)} requests got no answer (reset or time-out), e.g. "
                   f"{sorted({r['text'][:120] for r in no_answer})[:3]}")
    if other:
        bad.append(f"{len(other)} requests got an answer other than 201 or billing's 503, e.g. "
                   f"{sorted({str(r['status']) + ' ' + r['text'][:120] for r in other})[:3]}")
    for b in bad:
        print(f"  FAILED: {b}")
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load")
    lp.add_argument("--url", required=True)
    lp.add_argument("--clients", type=int, default=32)
    lp.add_argument("--seconds", type=float, default=40)
    lp.add_argument("--timeout", type=float, default=20)
    lp.add_argument("--prefix", required=True)
    lp.add_argument("--out", required=True)
    rp = sub.add_parser("report")
    rp.add_argument("--results", required=True)
    rp.add_argument("--committed", required=True)
    rp.add_argument("--kill-at", type=float, required=True)
    rp.add_argument("--json")
    args = p.parse_args()
    if args.cmd == "load":
        if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 600:
            p.error("--clients must be 1-256 and --seconds at most 600")
        host = urllib.parse.urlsplit(args.url).hostname or ""
        if not (host.startswith("10.") or host.startswith("127.") or host == "localhost"):
            # Only this machine's loopback and its local cluster's addresses (10.244.0.0/16 pods, 10.96.0.0/16
            # Services) are ever loaded.
            p.error(f"refusing to load {host}: only loopback or the local cluster's 10.x addresses")
        return load(args)
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
