"""Throughput at a requests-per-minute limit: vidbatch's summarize flow against a naive asyncio.gather client.

localapi (this process) enforces 600 requests/min over a sliding 60 s window and answers after 0.2-1.5 s;
each client runs in its own process and sends the same items, each with an inline video part.
Prints, per run and as medians: achieved rate / limit over the steady part (after the first window's
allowance), the share of 429s, items lost, the client's peak RSS and its growth from 100 items to the end,
and the time from the first request to the last answer. vidbatch runs twice: with the default smooth
pacing, and with `limits.window: sliding` (the first minute's allowance at once, as the server allows).
A client that bursts can show more than 1.0 over the steady part: a sliding 60 s window lets the
requests it refused earlier through as fast as the first ones once that first minute has passed.

    .venv/bin/python benchmarks/throughput.py [--items 1200] [--runs 3] [--no-sliding]
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
    responses,
    run_client,
    scratch,
    start_api,
    steady_rate,
    write_config,
)

FIGURES = {"achieved/limit (steady)": ".4f", "achieved/limit (whole run)": ".4f", "time to finish s": ".1f",
           "429 share %": ".3f",
           "items lost": "d", "peak RSS MB": ".1f", "RSS at 100 items MB": ".1f", "RSS growth 100->end MB": ".1f",
           "attempts per item": ".3f", "Prefect start-up s": ".1f"}


def figures(api, report: dict, items: int, rpm: int) -> dict:
    stats = api.stats()
    times = [t for t, _ in stats["admitted"]]
    answered, limited = responses(stats)
    whole = (len(times) - 1) / (max(times) - min(times)) if len(times) > 1 else float("nan")
    return {"achieved/limit (steady)": steady_rate(times, rpm) * 60 / rpm,
            "achieved/limit (whole run)": whole * 60 / rpm,
            "time to finish s": max(x[0] for x in stats["timeline"]) - min(times),
            "429 share %": 100 * limited / max(1, answered), "items lost": items - report["ok"],
            "peak RSS MB": report["peak_rss_mb"], "RSS at 100 items MB": report["rss_100_mb"],
            "RSS growth 100->end MB": report["rss_end_mb"] - report["rss_100_mb"],
            "attempts per item": report.get("attempts_mean"),
            "Prefect start-up s": (report["server_start_s"] + min(times) - report["called_t"])
            if "no_prefect" not in report else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rpm", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--no-sliding", action="store_true", help="skip the vidbatch run with limits.window: sliding")
    args = ap.parse_args()

    work = scratch("throughput")
    bucket = work / "bucket"
    make_bucket(bucket, args.items)
    api = start_api(rpm=args.rpm, latency=(0.2, 1.5))
    base = api.url + "/v1"
    windows = ["smooth"] + ([] if args.no_sliding else ["sliding"])
    runs = {**{f"vidbatch ({w})": [] for w in windows}, "naive": []}
    print(f"localapi {api.url}: rpm {args.rpm}, latency 0.2-1.5 s; {args.items} items; client concurrency "
          f"{args.concurrency}")
    try:
        for r in range(args.runs):
            for w in windows:
                api.reset()
                config = write_config(work / f"run{r}-{w}.yaml", bucket, base, work / f"ledger{r}-{w}",
                                      {"rpm": args.rpm, "concurrency": args.concurrency, "window": w}, timeout_s=30)
                rep = run_client({"mode": "flow", "config": str(config), "n": args.items}, work / "prefect")
                runs[f"vidbatch ({w})"].append(figures(api, rep, args.items, args.rpm))
            api.reset()
            rep = run_client({"mode": "naive", "source": str(bucket), "n": args.items,
                              "url": base + "/chat/completions", "concurrency": args.concurrency})
            rep["no_prefect"] = True
            runs["naive"].append(figures(api, rep, args.items, args.rpm))
            print_table(f"run {r + 1}", {k: v[-1] for k, v in runs.items()}, FIGURES)
    finally:
        api.stop()
    print_table(f"medians of {args.runs} runs (targets: steady >= 0.99, 429 <= 0.1 %, lost 0, peak <= 250 MB, "
                "growth <= 20 MB)", {k: median_rows(v) for k, v in runs.items()}, FIGURES)


if __name__ == "__main__":
    main()
