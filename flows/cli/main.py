"""The `vidbatch` command: run or index a config, report an index, serve the offline localapi, or run the demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

from flows.cli.console import (
    Progress,
    print_bill,
    print_generate_plan,
    print_generate_summary,
    print_plan,
    print_summary,
)
from tasks.config.load import load_config
from tasks.config.run import parse_when
from tasks.errors import VidbatchError
from tasks.record.totals import set_progress
from tasks.record.writable import check_writable
from tasks.secrets import scrub


def _run_flow(args: argparse.Namespace, load: Callable[..., Any], start: Callable[..., Any], what: str) -> int:
    """`vidbatch run` and `vidbatch index`: exit 0 all ok, 1 some item in error, 2 config or source wrong,
    4 the budget stopped the run (the rest is recorded error_type budget; the next run sends it)."""
    try:
        cfg = load(args.config)  # fail on a bad config, or an output that cannot be written, before Prefect starts
        parse_when(args.since), parse_when(args.until, "--until")
        if not args.dry_run:
            check_writable(cfg.output)
    except VidbatchError as e:
        print(f"vidbatch: {scrub(str(e))}", file=sys.stderr)
        return 2
    set_progress(Progress(enabled=not args.quiet))
    from flows.stop import RunCancelled, RunStopped, absorb_repeats

    absorb_repeats()
    try:
        result = asyncio.run(start(config=args.config, since=args.since, until=args.until, limit=args.limit,
                                   dry_run=args.dry_run, retry_failed=args.retry_failed, all_errors=args.all_errors,
                                   force=args.force, incremental=args.since_last_run, budget=args.budget))
    except VidbatchError as e:
        print(f"vidbatch: {scrub(str(e))}", file=sys.stderr)
        return 2
    except (RunStopped, RunCancelled) as stop:  # 130 for SIGINT, 143 for SIGTERM, as a shell reports it
        print(f"vidbatch: stopped by {stop.result['stopped']}; finished rows are in the ledger, the next run sends "
              "the rest", file=sys.stderr)
        print_summary(stop.result)
        return 128 + stop.signal
    if args.dry_run:
        print_plan(result["planned"], result["estimated_prompt_tokens"], what)
        print_bill(result)
    print_summary(result)
    if result.get("budget_not_sent"):
        return BUDGET_EXIT
    return 1 if result["error"] else 0


BUDGET_EXIT = 4  # the budget stopped the run: what is left is recorded error_type budget


def cmd_run(args: argparse.Namespace) -> int:
    from flows.summarize import summarize

    return _run_flow(args, load_config, summarize, "videos")


def cmd_index(args: argparse.Namespace) -> int:
    from flows.index import index
    from tasks.config.load import load_index_config

    return _run_flow(args, load_index_config, index, "requests")


def generate_exit_status(result: dict) -> int:
    """0: every prompt completed; 1: a prompt failed; 3: none failed but some are still in progress."""
    if result["failed"] or result["skipped_failed"]:
        return 1
    if result["in_progress"] or result["held_by_limit"]:
        return 3
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """`vidbatch generate CONFIG`: exit 0 all completed, 1 some failed, 2 config or prompt list wrong, 3 unfinished."""
    from flows.generate import generate
    from tasks.config.load import load_generate_config
    from tasks.generate.generator import check_chain, with_overrides

    try:
        check_chain(with_overrides(load_generate_config(args.config), args.deadline, args.summarize))
    except VidbatchError as e:
        print(f"vidbatch: {scrub(str(e))}", file=sys.stderr)
        return 2
    set_progress(Progress(enabled=not args.quiet))
    try:
        result = asyncio.run(generate(config=args.config, retry_failed=args.retry_failed, deadline_s=args.deadline,
                                      limit=args.limit, dry_run=args.dry_run, summarize_config=args.summarize))
    except VidbatchError as e:
        print(f"vidbatch: {scrub(str(e))}", file=sys.stderr)
        return 2
    if args.dry_run:
        print_generate_plan(result)
        return 0
    print_generate_summary(result)
    return generate_exit_status(result)


def cmd_compact(args: argparse.Namespace) -> int:
    from tasks.config.run import OutputConfig
    from tasks.record.compact import compact

    options = dict(o.split("=", 1) for o in args.storage_option if "=" in o)
    try:
        report = compact(OutputConfig(url=args.output, storage_options=options), args.partition, args.min_files)
    except VidbatchError as e:
        print(f"vidbatch: {scrub(str(e))}", file=sys.stderr)
        return 2
    for line in report.lines() or ["nothing to compact"]:
        print(line)
    return 0


def cmd_localapi(args: argparse.Namespace, rest: list[str]) -> int:
    from localapi.server import main

    return main(rest)


def cmd_report(args: argparse.Namespace) -> int:
    from tasks.index.report import write_report
    from tasks.record.report import is_index_output, write_ledger_report

    options = dict(o.split("=", 1) for o in args.storage_option if "=" in o)
    notes: list[str] = []
    try:
        if is_index_output(args.output, options):
            path = write_report(args.output, options, args.out, notes)
        else:  # a summarize ledger
            path = write_ledger_report(args.output, options, args.out)
    except VidbatchError as e:
        print(f"vidbatch: {scrub(str(e))}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"vidbatch: note: {scrub(note)}", file=sys.stderr)
    print(f"report: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.cli.demo import run_demo

    return run_demo(args.dir)


def main(argv: list[str] | None = None) -> int:
    # the temporary Prefect server a run starts stays on this machine: no telemetry heartbeat
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    parser = argparse.ArgumentParser(prog="vidbatch", description="Batch video understanding: object storage -> "
                                     "chat/completions -> Parquet.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the summarize flow over a config's source")
    idx = sub.add_parser("index", help="index a config's videos: chapters or events with absolute times, in Parquet")
    for p in (run, idx):  # the same flags
        p.add_argument("config", help="run config (YAML)")
        p.add_argument("--since", help="only objects modified at or after this date/time (UTC)")
        p.add_argument("--until", help="only objects modified before this date/time (UTC)")
        p.add_argument("--limit", type=int, help="send at most N videos")
        p.add_argument("--dry-run", action="store_true", help="list what would be sent and its token estimate")
        p.add_argument("--since-last-run", action="store_true",
                       help="only objects new or changed since the job's last successful run (its watermark)")
        p.add_argument("--retry-failed", action="store_true",
                       help="send again items whose last row is a retryable error")
        p.add_argument("--all-errors", action="store_true", help="send again items whose last row is any error")
        p.add_argument("--force", action="store_true", help="send everything again, finished or not")
        p.add_argument("--quiet", action="store_true", help="no progress line")
        p.add_argument("--budget", type=float, metavar="AMOUNT",
                       help="spend at most AMOUNT (the prices' currency) in this run; the rest waits for the next run")
    rep = sub.add_parser("report", help="write a self-contained HTML page of an index: timelines, thumbnails, tokens")
    rep.add_argument("output", help="an index output (output.url of an index config: holds ledger/ and index/) or a "
                     "summarize ledger (output.url of a run config)")
    rep.add_argument("--out", help="where the page goes (default OUTPUT/report.html)")
    rep.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                     help="fsspec storage option for OUTPUT and the sources, e.g. endpoint_url=http://127.0.0.1:9000")
    comp = sub.add_parser("compact", help="merge each date partition's small Parquet files into one, atomically")
    comp.add_argument("output", help="the ledger URL or path (output.url of a config)")
    comp.add_argument("--partition", action="append", help="only this partition (date=YYYY-MM-DD or the date)")
    comp.add_argument("--min-files", type=int, default=2, help="compact partitions holding at least N files")
    comp.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                      help="fsspec storage option, e.g. endpoint_url=http://127.0.0.1:9000")
    gen = sub.add_parser("generate", help="generate videos from a prompt list (Luma-style API), tracked in Parquet")
    gen.add_argument("config", help="generation config (YAML)")
    gen.add_argument("--retry-failed", action="store_true", help="submit again prompts whose task failed")
    gen.add_argument("--deadline", type=float, metavar="SECONDS",
                     help="stop polling after this long; the next run polls the unfinished tasks")
    gen.add_argument("--limit", type=int, help="submit at most N new prompts")
    gen.add_argument("--summarize", metavar="CONFIG", help="run this summarize config over the clips once all finished")
    gen.add_argument("--dry-run", action="store_true", help="validate the prompt list and show the plan")
    gen.add_argument("--quiet", action="store_true", help="no progress line")
    sub.add_parser("localapi", help="serve the OFFLINE localapi provider (options: vidbatch localapi --help)",
                   add_help=False)
    demo = sub.add_parser("demo", help="make sample videos, serve localapi, run summarize, show the ledger")
    demo.add_argument("--dir", default="demo-output", help="where the demo bucket and ledger go")
    args, rest = parser.parse_known_args(argv)
    if args.command == "localapi":
        return cmd_localapi(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    command = {"run": cmd_run, "demo": cmd_demo, "compact": cmd_compact, "generate": cmd_generate, "index": cmd_index,
               "report": cmd_report}[args.command]
    if args.command in ("compact", "report"):  # no flow: no Prefect API needed
        return command(args)
    from flows.prefect.api import prefect_api

    with prefect_api():
        return command(args)


if __name__ == "__main__":
    sys.exit(main())
