"""vidbatch's own cost per item: the whole summarize flow against a bare httpx loop on the same server.

localapi (this process) answers at once with no limits; the items are tiny videos delivered by URL
(a static file server in this process serves them; localapi fetches and decodes each). Three clients,
each in its own process, one after the other: the summarize flow under Prefect, the same flow body
with its Prefect tasks unwrapped (no Prefect), and a bare httpx loop (same concurrency, no retries,
no listing, probing or ledger). Prints steady-state requests per second (between the 10th and 90th
percentile of answers), the flow / bare ratio, process and Prefect start-up separately, the client
CPU per item and Prefect's share of it.

    .venv/bin/python benchmarks/overhead.py [--items 2000] [--runs 3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402 - after sys.path setup
    make_bucket,
    median_rows,
    middle_rate,
    print_table,
    run_client,
    scratch,
    start_api,
    write_config,
)

FIGURES = {"steady requests/s": ".1f", "ratio to bare loop": ".3f", "process start-up s": ".2f",
           "Prefect server start-up s": ".2f", "call to first request s": ".2f", "client CPU per item ms": ".3f",
           "Prefect share of client CPU %": ".1f",
           "Prefect server CPU per item ms": ".3f", "items ok": "d", "peak RSS MB": ".1f"}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve_folder(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def figures(api, report: dict) -> dict:
    times = [t for t, _ in api.stats()["admitted"]]
    return {"steady requests/s": middle_rate(times), "process start-up s": report["import_s"],
            "Prefect server start-up s": report.get("server_start_s"),
            "call to first request s": min(times) - report["called_t"],
            "client CPU per item ms": report["cpu_per_item_ms"], "items ok": report["ok"],
            "Prefect server CPU per item ms": 1000 * report["prefect_server_cpu_s"] / report["ok"]
            if report.get("prefect_server_cpu_s") else None, "peak RSS MB": report["peak_rss_mb"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    work = scratch("overhead")
    bucket = work / "bucket"
    make_bucket(bucket, args.items)
    files, public = serve_folder(bucket)
    api = start_api()
    base = api.url + "/v1"
    runs = {"flow (Prefect)": [], "flow, no Prefect": [], "bare httpx loop": []}
    print(f"localapi {api.url}: no limits, no latency; {args.items} tiny URL-delivered items from {public}; "
          f"concurrency {args.concurrency}")
    try:
        for r in range(args.runs):
            row = {}
            for name, extra in (("flow (Prefect)", {}), ("flow, no Prefect", {"no_prefect": True})):
                api.reset()
                config = write_config(work / f"run{r}-{len(row)}.yaml", bucket, base, work / f"ledger{r}-{len(row)}",
                                      {"concurrency": args.concurrency}, delivery="public_url", public_base_url=public)
                row[name] = figures(api, run_client({"mode": "flow", "config": str(config), "n": args.items, **extra},
                                                    work / "prefect"))
            api.reset()
            row["bare httpx loop"] = figures(api, run_client({
                "mode": "bare", "n": args.items, "url": base + "/chat/completions", "public_base_url": public,
                "concurrency": args.concurrency}))
            bare = row["bare httpx loop"]["steady requests/s"]
            for fig in row.values():
                fig["ratio to bare loop"] = fig["steady requests/s"] / bare
            with_p, without = row["flow (Prefect)"], row["flow, no Prefect"]
            with_p["Prefect share of client CPU %"] = 100 * (1 - without["client CPU per item ms"]
                                                             / with_p["client CPU per item ms"])
            for name, fig in row.items():
                runs[name].append(fig)
            print_table(f"run {r + 1}", row, FIGURES)
    finally:
        api.stop()
        files.shutdown()
    print_table(f"medians of {args.runs} runs (target: flow / bare >= 0.7)",
                {k: median_rows(v) for k, v in runs.items()}, FIGURES)


if __name__ == "__main__":
    main()
