#!/usr/bin/env python3
"""The Python parts of e2e/scenario.sh, one subcommand each (standard library only).

  quote TEXT                      TEXT percent-encoded for a URL query (a PromQL expression)
  promql-lines                    Prometheus' JSON answer on stdin -> one "<labels> <value>" line per series:
                                  labels k=v,k=v sorted without __name__ ("" for none), whole values as integers
  gt A B                          exit 0 when the number A is greater than B, else 1
  count                           the length of the JSON array on stdin
  count-client CLIENT             how many records of the JSON array on stdin have client_id CLIENT
  pg-log-time LINE                the timestamp PostgreSQL put at the start of LINE (log_line_prefix %m), as epoch
                                  seconds
  missing-acked GETALL LOAD       the ids acknowledged in the load file LOAD ("... transaction id=N 201" lines)
                                  that the /getall answer in file GETALL lacks, space-separated ("" for none)
  load-answers LOAD               "ACKED UNKNOWN" of the load file LOAD: the answers 201, and those that leave the
                                  payment's fate unknown (neither 201 nor "nothing was recorded": a time-out, an
                                  answer "may or may not be recorded")
  has-tx ID AMOUNT CLIENT         exit 0 when ONE record of the JSON on stdin (an object, or an array of them) has
                                  this id, amount and client_id, else 1
"""
import datetime
import json
import re
import sys
import urllib.parse


def promql_lines(answer):
    d = json.loads(answer)
    if d.get("status") != "success":
        sys.exit("prometheus: " + d.get("error", "query failed"))
    for r in d["data"]["result"]:
        v = float(r["value"][1])
        labels = ",".join(f"{k}={v2}" for k, v2 in sorted(r["metric"].items()) if k != "__name__")
        print(labels, int(v) if v.is_integer() else v)


def pg_log_time(line):
    stamp = " ".join(line.split()[:2])
    t = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
    print(t.timestamp())


def missing_acked(getall_file, load_file):
    with open(getall_file, encoding="utf-8") as f:
        have = {t["id"] for t in json.load(f)}
    with open(load_file, encoding="utf-8") as f:
        acked = [int(m) for m in re.findall(r"transaction id=(\d+) 201$", f.read(), re.M)]
    print(" ".join(str(i) for i in acked if i not in have))


def load_answers(load_file):
    acked = unknown = 0
    with open(load_file, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if re.search(r"transaction id=\d+ 201$", line):
                acked += 1
            elif "nothing was recorded" not in line:
                unknown += 1
    print(acked, unknown)


def has_tx(answer, tx_id, amount, client):
    d = json.loads(answer)
    records = d if isinstance(d, list) else [d]
    return any(isinstance(r, dict) and r.get("id") == tx_id and r.get("amount") == amount
               and r.get("client_id") == client for r in records)


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "quote" and len(args) == 1:
        print(urllib.parse.quote(args[0], safe=""))
    elif cmd == "promql-lines" and not args:
        promql_lines(sys.stdin.read())
    elif cmd == "gt" and len(args) == 2:
        return 0 if float(args[0]) > float(args[1]) else 1
    elif cmd == "count" and not args:
        print(len(json.load(sys.stdin)))
    elif cmd == "count-client" and len(args) == 1:
        print(sum(1 for t in json.load(sys.stdin) if t["client_id"] == args[0]))
    elif cmd == "pg-log-time" and len(args) == 1:
        pg_log_time(args[0])
    elif cmd == "missing-acked" and len(args) == 2:
        missing_acked(args[0], args[1])
    elif cmd == "load-answers" and len(args) == 1:
        load_answers(args[0])
    elif cmd == "has-tx" and len(args) == 3:
        return 0 if has_tx(sys.stdin.read(), int(args[0]), int(args[1]), args[2]) else 1
    else:
        sys.exit(f"scenario_lib.py: bad command {argv!r}\n{__doc__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
