"""The generate flow: validate a prompt list, submit new prompts, poll every open task, store the clips, record it all."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.cli.console import Progress, current_progress, set_progress
from flows.summarize import summarize
from tasks.config.generate import GenerateConfig
from tasks.config.load import load_generate_config
from tasks.errors import VidbatchError
from tasks.generate.generator import (
    GenerateTotals,
    Generator,
    Work,
    check_chain,
    open_generation_client,
    plan_work,
    with_overrides,
)
from tasks.generate.prompts import Prompt, load_prompts
from tasks.generate.table import Generation, GenerationsTable, Recorder


@task(name="read-prompts", cache_policy=NO_CACHE, persist_result=False)
def read_prompts(cfg: GenerateConfig) -> list[Prompt]:
    return load_prompts(cfg)


@task(name="track-generations", cache_policy=NO_CACHE, persist_result=False)
async def track_batch(generator: Generator, work: list[Work]) -> list[Generation]:
    return await generator.track_all(work)


async def publish_summary(cfg: GenerateConfig, totals: GenerateTotals, dry_run: bool) -> None:
    key = "generate-" + re.sub(r"[^a-z0-9-]+", "-", cfg.job.lower()).strip("-")
    await acreate_table_artifact(table=[{"job": cfg.job, "dry_run": dry_run, **totals.as_dict()}], key=key,
                                 description=f"vidbatch generate: {cfg.job} -> {cfg.output.url}")


@flow(name="generate", persist_result=False)
async def generate(config: str, retry_failed: bool = False, deadline_s: float | None = None, limit: int | None = None,
                   dry_run: bool = False, summarize_config: str | None = None) -> dict:
    """Generate a clip for every prompt of the list that has none, and summarize the clips once all are finished."""
    log = get_run_logger()
    cfg = with_overrides(load_generate_config(config), deadline_s, summarize_config)
    run_id = str(flow_run.id or uuid.uuid4())
    chain = check_chain(cfg)
    prompts = read_prompts(cfg)
    table = GenerationsTable(cfg.output)
    plan = plan_work(prompts, table.latest(), retry_failed, limit)
    totals = GenerateTotals.of(len(prompts), plan)
    log.info("%d prompts: %d to submit, %d tasks to poll, %d already completed, %d failed before (not resubmitted)",
             len(prompts), plan.to_submit, plan.to_resume, plan.completed, plan.failed)
    if not dry_run and plan.work:
        progress = current_progress()
        recorder = Recorder(table, run_id, cfg.output.flush_seconds)
        async with open_generation_client(cfg) as (client, base_url):
            generator = Generator(cfg, client, base_url, recorder, run_id, log=log, totals=totals,
                                  on_change=lambda: progress.update(totals))
            try:
                async with asyncio.TaskGroup() as group:
                    for start in range(0, len(plan.work), cfg.output.batch_size):
                        group.create_task(track_batch(generator, plan.work[start:start + cfg.output.batch_size]))
            finally:
                await recorder.close()
        current_progress().close(totals)
    await publish_summary(cfg, totals, dry_run)
    finished = not dry_run and totals.in_progress == 0 and plan.held == 0
    chained = await summarize(config=chain) if chain and finished else None
    if chain and not finished:
        log.info("not summarizing yet: %d tasks still in progress; a rerun summarizes once all are finished",
                 totals.in_progress)
    return {"run_id": run_id, "output": cfg.output.url, "table": cfg.output.table_url,
            "videos": cfg.output.videos_url, "to_submit": plan.to_submit, **totals.as_dict(),
            "summarize": chained}


def print_generate_summary(result: dict, out=sys.stdout) -> None:
    keys = ["prompts", "submitted", "resumed", "completed", "failed", "in_progress", "skipped_completed",
            "skipped_failed", "held_by_limit", "output_bytes", "wall_time_s"]
    width = max(len(k) for k in keys + ["generations"])
    print("generate summary:", file=out)
    for k in keys:
        v = result[k]
        print(f"  {k:<{width}}  {v:,}" if isinstance(v, int) else f"  {k:<{width}}  {v}", file=out)
    print(f"  {'generations':<{width}}  {result['table']}", file=out)
    print(f"  {'videos':<{width}}  {result['videos']}", file=out)
    if result["summarize"]:
        s = result["summarize"]
        print(f"  {'summarized':<{width}}  ok {s['ok']}, error {s['error']}, already done "
              f"{s['skipped_already_done']} -> {s['output']}", file=out)


def exit_status(result: dict) -> int:
    """0: every prompt completed; 1: a prompt failed; 3: none failed but some are still in progress."""
    if result["failed"] or result["skipped_failed"]:
        return 1
    if result["in_progress"] or result["held_by_limit"]:
        return 3
    return 0


def cli(args: argparse.Namespace) -> int:
    """`vidbatch generate CONFIG`: exit 0 all completed, 1 some failed, 2 config or prompt list wrong, 3 unfinished."""
    try:
        cfg = with_overrides(load_generate_config(args.config), args.deadline, args.summarize)
        check_chain(cfg)
    except VidbatchError as e:
        print(f"vidbatch: {e}", file=sys.stderr)
        return 2
    set_progress(Progress(enabled=not args.quiet))
    try:
        result = asyncio.run(generate(config=args.config, retry_failed=args.retry_failed, deadline_s=args.deadline,
                                      limit=args.limit, dry_run=args.dry_run, summarize_config=args.summarize))
    except VidbatchError as e:
        print(f"vidbatch: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"dry run: nothing is sent; would submit {result['to_submit']} prompts and poll {result['resumed']} "
              f"tasks ({result['skipped_completed']} already completed, {result['skipped_failed']} failed before)")
        return 0
    print_generate_summary(result)
    return exit_status(result)

