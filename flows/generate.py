"""The generate flow: validate a prompt list, submit new prompts, poll every open task, store the clips, record all."""

from __future__ import annotations

import asyncio
import uuid

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.prefect.artifacts import publish_summary
from flows.summarize import summarize
from tasks.config.generate import GenerateConfig
from tasks.config.load import load_generate_config
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
from tasks.record.totals import current_progress


@task(name="read-prompts", cache_policy=NO_CACHE, persist_result=False)
def read_prompts(cfg: GenerateConfig) -> list[Prompt]:
    return load_prompts(cfg)


@task(name="track-generations", cache_policy=NO_CACHE, persist_result=False)
async def track_batch(generator: Generator, work: list[Work]) -> list[Generation]:
    return await generator.track_all(work)


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
    plan = plan_work(prompts, table.latest(p.key for p in prompts), retry_failed, limit)
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
    await publish_summary("generate", cfg.job, cfg.output.url, {"dry_run": dry_run, **totals.as_dict()})
    finished = not dry_run and totals.in_progress == 0 and plan.held == 0
    chained = await summarize(config=chain) if chain and finished else None
    if chain and not finished:
        log.info("not summarizing yet: %d tasks still in progress; a rerun summarizes once all are finished",
                 totals.in_progress)
    return {"run_id": run_id, "output": cfg.output.url, "table": cfg.output.table_url,
            "videos": cfg.output.videos_url, "to_submit": plan.to_submit, **totals.as_dict(),
            "summarize": chained}
