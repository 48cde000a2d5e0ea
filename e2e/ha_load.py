#!/usr/bin/env python3
"""Payments under a failover, and what became of each (issue 11 §4, keyed retries issue 21; run by e2e/ha.sh).

  ha_load.py load --url http://ADDR:8080 --clients 32 --seconds 40 --prefix ha-pod --out F.jsonl
      CLIENTS threads each send payments one after another for SECONDS, as a careful client of a payment API does:
      each payment has its own Idempotency-Key, and every answer but a 201 (billing's 503s, any other answer, a
      reset, a time-out) is retried with the same key after a short pause until a 201 comes, for at most
      --resolve-seconds after SECONDS. One JSON line per request: the payment's client_id and key, the attempt, when
      it was sent and answered (Unix seconds), the HTTP status (0 when no answer came), whether billing said it was
      a replay, the id it gave, and the answer's text. Bounded: no new payment after SECONDS, no retry after
      SECONDS + --resolve-seconds, and each request waits at most --timeout seconds. With --stop-file F, no new
      payment is started once F exists either (the caller ends the load when what it waited for has happened).

  ha_load.py report --results F.jsonl --committed C.txt --kill-at T [--json OUT]
      C.txt holds the ledger's rows of the run afterwards, "client_id id" per line. Prints what became of the
      payments (acknowledged / duplicated / lost / unresolved) and exits 1 if a payment has two rows, an
      acknowledged one is missing or has another id than it was acknowledged with, a payment never got its 201, a
      payment told "nothing was recorded" at every try before a replay (so one of those answers was false), or
      any request got another answer than 201 or billing's 503 ("may or may not be recorded", "nothing was
      recorded"): a 500, any other status or text, or no answer at all (billing stays up through a failover and
      answers every request within its own time-outs, well inside --timeout).

  ha_load.py pitr --results F.jsonl [--results G.jsonl ...] --committed C.txt --target T [--json OUT]
      After a point-in-time recovery to T (Unix seconds): C.txt holds the recovered ledger's rows, "client_id id"
      per line. Every payment acknowledged (its 201 answered) before T must be there once, under the id it was
      acknowledged with; no payment first sent after T may be there (the recovery went past its target). Prints
      the counts (acknowledged before T, present, missing; acknowledged after T, absent by design) and exits 1 on
      a missing, duplicated, renumbered or too-new payment.

Standard library only: it runs on the host that runs the cluster, against the billing Service's address.
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid

IN_DOUBT = "may or may not"
NOTHING = "nothing was recorded"


def load(args):
    url = urllib.parse.urlsplit(args.url)
    deadline = time.time() + args.seconds
    resolve_deadline = deadline + args.resolve_seconds
    lock = threading.Lock()
    out = open(args.out, "w", encoding="utf-8")

    def client(n):
        conn = None
        seq = 0
        while time.time() < deadline and not (args.stop_file and os.path.exists(args.stop_file)):
            seq += 1
            cid = f"{args.prefix}-{n:02d}-{seq:06d}"
            key = str(uuid.uuid4())
            attempt = 0
            while True:
                attempt += 1
                sent = time.time()
                status, text, replayed, location = 0, "", False, ""
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=args.timeout)
                    conn.request("POST", f"/add?client_id={cid}&amount=1", headers={"Idempotency-Key": key})
                    resp = conn.getresponse()
                    status, text = resp.status, resp.read().decode("utf-8", "replace")
                    replayed = resp.getheader("Idempotent-Replayed", "") == "true"
                    location = resp.getheader("Location", "")
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
                    out.write(json.dumps({"client_id": cid, "key": key, "attempt": attempt, "sent": sent,
                                          "answered": answered, "status": status, "replayed": replayed,
                                          "id": location.removeprefix("/get/"), "text": text[:300]}) + "\n")
                if status == 201 or time.time() >= resolve_deadline:
                    break
                # A real client backs off before retrying; 50 ms keeps a refused connection from becoming a busy
                # loop.
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + args.resolve_seconds + args.timeout + 10)
    out.close()
    return 0


def read_rows(paths):
    """Every request `load` wrote to the given files."""
    return [json.loads(line) for path in paths for line in open(path, encoding="utf-8") if line.strip()]


def by_payment(rows):
    """{client_id: its requests}, and {client_id: its first 201} of the payments that got one."""
    payments = {}
    for r in rows:
        payments.setdefault(r["client_id"], []).append(r)
    acknowledged = {cid: next(r for r in tries if r["status"] == 201) for cid, tries in payments.items()
                    if any(r["status"] == 201 for r in tries)}
    return payments, acknowledged


def read_ledger(path):
    """The ledger's rows of a run, "client_id id" per line: {client_id: [id, ...]}."""
    ledger = {}
    for line in open(path, encoding="utf-8"):
        if line.strip():
            cid, _, row_id = line.strip().partition(" ")
            ledger.setdefault(cid, []).append(row_id)
    return ledger


def show(result, json_path):
    for key, value in result.items():
        print(f"  {key}: {value}")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


def verdict(bad):
    for b in bad:
        print(f"  FAILED: {b}")
    return 1 if bad else 0


def report(args):
    rows = read_rows([args.results])
    ledger = read_ledger(args.committed)
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
    payments, acknowledged = by_payment(rows)
    unresolved = sorted(set(payments) - set(acknowledged))
    duplicated = sorted(cid for cid, ids in ledger.items() if len(ids) > 1)
    lost = sorted(cid for cid in acknowledged if cid not in ledger)
    wrong_id = sorted(cid for cid, r in acknowledged.items() if cid in ledger and ledger[cid] != [r["id"]])
    # A replay means an earlier try committed; if every earlier try was told "nothing was recorded", one was false.
    lied = sorted(cid for cid, r in acknowledged.items() if r["replayed"] and all(
        t["status"] == 503 and NOTHING in t["text"] for t in payments[cid] if t["attempt"] < r["attempt"]))
    strangers = sorted(set(ledger) - set(payments))
    after = [r for r in acked if r["sent"] >= kill]
    first_ok = min((r["answered"] for r in after), default=None)
    last_ok_before = max((r["answered"] for r in acked if r["answered"] < kill), default=None)
    # The outage: the longest stretch after the kill with no 201 answered (a smart shutdown, say, keeps serving
    # for a while first, so the first 201 after the kill is not where the service came back).
    times = sorted([kill] + [r["answered"] for r in acked if r["answered"] >= kill])
    gap_start, gap_end = max(zip(times, times[1:]), key=lambda g: g[1] - g[0], default=(kill, kill))
    result = {
        "payments": len(payments),
        "requests": len(rows),
        "acknowledged": len(acknowledged),
        "duplicated": len(duplicated),
        "lost": len(lost),
        "unresolved": len(unresolved),
        "acknowledged_with_another_id": len(wrong_id),
        "retried_payments": sum(len(tries) > 1 for tries in payments.values()),
        "replayed": sum(r["replayed"] for r in acked),
        "answers_in_doubt": len(in_doubt),
        "answers_nothing_recorded": len(nothing),
        "nothing_recorded_but_replayed": len(lied),
        "no_answer": len(no_answer),
        "other_answers": len(other),
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
    show(result, args.json)
    bad = []
    if duplicated:
        bad.append(f"{len(duplicated)} payments have more than one row, e.g. {duplicated[:5]}")
    if lost:
        bad.append(f"{len(lost)} acknowledged payments are not in the ledger, e.g. {lost[:5]}")
    if wrong_id:
        bad.append(f"{len(wrong_id)} payments are in the ledger under another id than acknowledged, e.g. {wrong_id[:5]}")
    if unresolved:
        bad.append(f"{len(unresolved)} payments never got a 201 within --resolve-seconds, e.g. {unresolved[:5]}")
    if lied:
        bad.append(f"{len(lied)} payments told only 'nothing was recorded' were then replayed, e.g. {lied[:5]}")
    if strangers:
        bad.append(f"{len(strangers)} rows of this run were never sent, e.g. {strangers[:5]}")
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
    return verdict(bad)


def pitr(args):
    ledger = read_ledger(args.committed)
    target = args.target
    payments, acked = by_payment(read_rows(args.results))
    before = {cid: r for cid, r in acked.items() if r["answered"] < target}
    after = {cid: r for cid, r in acked.items() if r["answered"] >= target}
    missing = sorted(cid for cid in before if cid not in ledger)
    wrong_id = sorted(cid for cid, r in before.items() if cid in ledger and ledger[cid] != [r["id"]])
    duplicated = sorted(cid for cid, ids in ledger.items() if len(ids) > 1)
    too_new = sorted(cid for cid, tries in payments.items() if cid in ledger and min(t["sent"] for t in tries) > target)
    result = {
        "acknowledged_before_target": len(before),
        "acknowledged_before_target_present": len(before) - len(missing),
        "acknowledged_before_target_missing": len(missing),
        "acknowledged_with_another_id": len(wrong_id),
        "duplicated": len(duplicated),
        "acknowledged_after_target": len(after),
        "acknowledged_after_target_present": sum(cid in ledger for cid in after),
        "first_sent_after_target_present": len(too_new),
        "seconds_last_201_before_target_to_target": round(target - max(r["answered"] for r in before.values()), 2)
        if before else None,
    }
    show(result, args.json)
    bad = []
    if not before:
        bad.append("no payment was acknowledged before the target: nothing was checked")
    if missing:
        bad.append(f"{len(missing)} payments acknowledged before the target are not in the recovered ledger, e.g. {missing[:5]}")
    if wrong_id:
        bad.append(f"{len(wrong_id)} payments are recovered under another id than acknowledged, e.g. {wrong_id[:5]}")
    if duplicated:
        bad.append(f"{len(duplicated)} payments have more than one row, e.g. {duplicated[:5]}")
    if too_new:
        bad.append(f"{len(too_new)} payments first sent after the target are in the recovered ledger, e.g. {too_new[:5]}")
    return verdict(bad)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load")
    lp.add_argument("--url", required=True)
    lp.add_argument("--clients", type=int, default=32)
    lp.add_argument("--seconds", type=float, default=40)
    lp.add_argument("--timeout", type=float, default=20)
    lp.add_argument("--resolve-seconds", type=float, default=90)
    lp.add_argument("--prefix", required=True)
    lp.add_argument("--out", required=True)
    lp.add_argument("--stop-file")
    rp = sub.add_parser("report")
    rp.add_argument("--results", required=True)
    rp.add_argument("--committed", required=True)
    rp.add_argument("--kill-at", type=float, required=True)
    rp.add_argument("--json")
    pp = sub.add_parser("pitr")
    pp.add_argument("--results", required=True, action="append")
    pp.add_argument("--committed", required=True)
    pp.add_argument("--target", type=float, required=True)
    pp.add_argument("--json")
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
    if args.cmd == "pitr":
        return pitr(args)
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
