"""The summarize flow: list new videos, probe them, send them in batches, record every answer."""

from __future__ import annotations

import re
import uuid
from contextlib import nullcontext

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tasks.call import call_items
from tasks.config import RunConfig, load_config, parse_when
from tasks.delivery import check_delivery
from tasks.discover import DiscoverStats, iter_objects, open_source
from tasks.ledger import ok_keys, write_rows
from tasks.plan import pending_batches, plan_items
from tasks.progress import RunTotals, current_progress
from tasks.provider import open_provider


@task(name="plan-batch", cache_policy=NO_CACHE, persist_result=False)
def plan_batch(fs, objs, cfg: RunConfig):
    return plan_items(fs, objs, cfg)


@task(name="call-batch", cache_policy=NO_CACHE, persist_result=False)
async def call_batch(items, client, fs, cfg: RunConfig, run_id: str, totals: RunTotals):
    progress = current_progress()

    def on_row(row: dict) -> None:
        totals.add_row(row)
        progress.update(totals)

    return await call_items(items, client, fs, cfg, run_id, on_row)


@task(name="record-batch", cache_policy=NO_CACHE, persist_result=False)
def record_batch(rows: list[dict], cfg: RunConfig, run_id: str) -> list[str]:
    return write_rows(rows, cfg.output, run_id)


async def publish_summary(cfg: RunConfig, totals: RunTotals, dry_run: bool) -> None:
    key = "summarize-" + re.sub(r"[^a-z0-9-]+", "-", cfg.job.lower()).strip("-")
    await acreate_table_artifact(table=[{"job": cfg.job, "dry_run": dry_run, **totals.as_dict()}], key=key,
                                 description=f"vidbatch summarize: {cfg.job} -> {cfg.output.url}")


def dry_run_line(item) -> dict:
    pr = item.probe
    return {"source_uri": item.obj.uri, "duration_s": pr.duration_s if pr else None,
            "has_audio": pr.has_audio if pr else None, "mime": item.mime,
            "estimated_prompt_tokens": item.estimated_prompt_tokens,
            "error": str(item.error) if item.error else None}


@flow(name="summarize", persist_result=False)
async def summarize(config: str, since: str | None = None, until: str | None = None, limit: int | None = None,
                    dry_run: bool = False) -> dict:
    """Summarize every video under the config's source that the ledger has no ok row for."""
    log = get_run_logger()
    cfg = load_config(config)
    run_id = str(flow_run.id or uuid.uuid4())
    fs, root = open_source(cfg.source)
    check_delivery(fs, cfg.provider)
    totals, found, planned = RunTotals(), DiscoverStats(), []
    objs = iter_objects(fs, root, cfg.source, parse_when(since), parse_when(until, "--until"), found)
    done = ok_keys(cfg.output)
    async with (nullcontext() if dry_run else open_provider(cfg)) as client:
        for batch in pending_batches(objs, cfg, done, totals, limit):
            items = plan_batch(fs, batch, cfg)
            totals.planned += len(items)
            if dry_run:
                planned += [dry_run_line(i) for i in items]
                totals.estimated_prompt_tokens += sum(i.estimated_prompt_tokens or 0 for i in items)
                continue
            record_batch(await call_batch(items, client, fs, cfg, run_id, totals), cfg, run_id)
            log.info("batch recorded: %s", totals.line())
    totals.skipped_discover = dict(found.skipped)
    current_progress().close(totals)
    await publish_summary(cfg, totals, dry_run)
    return {"run_id": run_id, "output": cfg.output.url, **totals.as_dict(), "planned": planned}
