"""Fault survival: vidbatch's summarize flow and a naive asyncio.gather client against 10 % transient faults.

localapi (this process) answers 10 % of requests with a fault, spread evenly over every transient kind:
429, 500, 502, 502 with an HTML body, 503, 504, a dropped connection, a stall past the client's read
timeout, and a 200 whose JSON is cut short. Each client runs in its own process. Prints items ok,
items error, attempts per item, duplicates (more than one ok row, or more than one ok answer from
localapi, for one request_key) and lost items (no ok answer recorded).

    .venv/bin/python benchmarks/faults.py [--items 600] [--runs 3] [--rate 0.10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402 - after sys.path setup
    make_bucket,
    median_rows,
    print_table,
    run_client,
    scratch,
    settle,
    start_api,
    write_config,
)

KINDS = ("429", "500", "502", "502html", "503", "504", "drop", "stall", "malformed")
FIGURES = {"items ok": "d", "items error": "d", "items lost": "d", "attempts per item": ".3f",
           "attempts max": "d", "duplicate ok rows": "d", "keys answered ok twice by localapi": "d",
           "stalls localapi finished after the client left": "d", "faults injected": "d"}


def figures(api, report: dict, items: int) -> dict:
    settle(api)  # stalled answers the client gave up on are still answered: count them in this client's run
    stats = api.stats()
    twice = sum(1 for n in stats["keys"].values() if n > 1)
    return {"items ok": report["ok"], "items error": report["error"], "items lost": items - report["ok"],
            "attempts per item": report["attempts_mean"], "attempts max": report["attempts_max"],
            "duplicate ok rows": report["dup_ok"], "keys answered ok twice by localapi": twice,
            "stalls localapi finished after the client left": stats["faults"].get("stall", 0),
            "faults injected": sum(stats["faults"].values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=600)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0.10, help="share of requests answered with a fault")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--read-timeout", type=float, default=2.0)
    ap.add_argument("--stall", type=float, default=8.0, help="seconds a stalled answer takes (past the read timeout)")
    args = ap.parse_args()

    work = scratch("faults")
    bucket = work / "bucket"
    make_bucket(bucket, args.items)
    faults = {k: args.rate / len(KINDS) for k in KINDS}
    api = start_api(faults=faults, stall_s=args.stall, latency=(0.0, 0.05))
    base = api.url + "/v1"
    runs = {"vidbatch": [], "naive": []}
    print(f"localapi {api.url}: {args.rate:.0%} faults over {', '.join(KINDS)}; stall {args.stall} s; {args.items} "
          f"items; read timeout {args.read_timeout} s; concurrency {args.concurrency}")
    try:
        for r in range(args.runs):
            api.reset()
            api.config.seed = r
            config = write_config(work / f"run{r}.yaml", bucket, base, work / f"ledger{r}",
                                  {"concurrency": args.concurrency}, timeout_s=args.read_timeout, max_attempts=6,
                                  backoff_initial_s=0.2, backoff_max_s=2)
            rep = run_client({"mode": "flow", "config": str(config), "n": args.items}, work / "prefect")
            runs["vidbatch"].append(figures(api, rep, args.items))
            api.reset()
            api.config.seed = r
            rep = run_client({"mode": "naive", "source": str(bucket), "n": args.items,
                              "url": base + "/chat/completions",
                              "concurrency": args.concurrency, "timeout_s": args.read_timeout, "max_attempts": 6,
                              "backoff_initial_s": 0.2, "backoff_max_s": 2})
            runs["naive"].append(figures(api, rep, args.items))
            print_table(f"run {r + 1}", {k: v[-1] for k, v in runs.items()}, FIGURES)
    finally:
        api.stop()
    print_table(f"medians of {args.runs} runs (targets: all ok, 0 duplicates, 0 lost)",
                {k: median_rows(v) for k, v in runs.items()}, FIGURES)


if __name__ == "__main__":
    main()
