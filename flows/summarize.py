"""The summarize flow: list new videos, probe them, send them in batches, record every answer."""

from __future__ import annotations

import asyncio
import re
import uuid
from contextlib import nullcontext

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.cli.console import current_progress
from flows.prefect.artifacts import BatchProgress
from flows.prefect.shared_limits import shared_permits
from tasks.call.provider import open_provider
from tasks.call.send import call_items
from tasks.config.load import load_config
from tasks.config.run import RunConfig
from tasks.discover.listing import DiscoverStats, iter_objects, open_source
from tasks.plan.batches import pending_batches, run_window
from tasks.plan.items import plan_items, unfinished
from tasks.plan.shards import with_prefix
from tasks.prepare.body import ByteBudget
from tasks.prepare.delivery import check_delivery
from tasks.prepare.transform import Scratch, scratch_prefix
from tasks.record.journal import LedgerWriter, recover_journal
from tasks.record.ledger import finished_keys, finished_sources, latest_state
from tasks.record.tables import now_utc
from tasks.record.totals import RunTotals
from tasks.record.watermark import Watermark, write_watermark


@task(name="plan-batch", cache_policy=NO_CACHE, persist_result=False)
def plan_batch(fs, objs, cfg: RunConfig):
    return plan_items(fs, objs, cfg)


@task(name="call-batch", cache_policy=NO_CACHE, persist_result=False)
async def call_batch(items, client, fs, cfg: RunConfig, run_id: str, totals: RunTotals, writer: LedgerWriter,
                     budget: ByteBudget, scratch: Scratch, check=None):
    progress = current_progress()

    async def record(row: dict) -> None:
        await asyncio.to_thread(writer.add, row)  # journaled at once, in the ledger by the flush policy
        totals.add_row(row)
        progress.update(totals)

    return await call_items(items, client, fs, cfg, run_id, record, budget, scratch, check)


async def publish_summary(cfg: RunConfig, totals: RunTotals, dry_run: bool) -> None:
    key = "summarize-" + re.sub(r"[^a-z0-9-]+", "-", cfg.job.lower()).strip("-")
    await acreate_table_artifact(table=[{"job": cfg.job, "dry_run": dry_run, **totals.as_dict()}], key=key,
                                 description=f"vidbatch summarize: {cfg.job} -> {cfg.output.url}")


def dry_run_line(item) -> dict:
    pr = item.probe
    return {"source_uri": item.obj.uri, "duration_s": item.duration_s, "has_audio": pr.has_audio if pr else None,
            "mime": item.mime, "estimated_prompt_tokens": item.estimated_prompt_tokens,
            "segment": f"{item.segment_index + 1}/{item.segment_count} at {item.segment_start_s:.1f} s"
            if item.segment_count > 1 else "", "ops": ",".join(item.ops),
            "error": str(item.error) if item.error else None}


@flow(name="summarize", persist_result=False)
async def summarize(config: str, since: str | None = None, until: str | None = None, limit: int | None = None,
                    dry_run: bool = False, retry_failed: bool = False, all_errors: bool = False, force: bool = False,
                    incremental: bool = False, prefix: str | None = None) -> dict:
    """Summarize every video under the config's source (or its `prefix` below it) that the ledger has not finished."""
    log = get_run_logger()
    cfg = with_prefix(load_config(config), prefix)
    run_id, started = str(flow_run.id or uuid.uuid4()), now_utc()
    fs, root = open_source(cfg.source)
    check_delivery(fs, cfg.provider)
    window = run_window(cfg, since, until, incremental and not (retry_failed or all_errors or force))
    if not dry_run and (recovered := recover_journal(cfg.output, run_id)):
        log.info("recovered %d finished rows from the journal of a run that stopped", recovered)
    state = latest_state(cfg.output)
    done = finished_keys(state, retry_failed, all_errors, force)
    totals, found, planned = RunTotals(), DiscoverStats(), []
    objs = iter_objects(fs, root, cfg.source, window.since, window.until, found, scratch_prefix(cfg))
    writer = LedgerWriter(cfg.output, run_id) if not dry_run else None
    budget, scratch = ByteBudget(cfg.media.inflight_bytes), Scratch(cfg)
    board, permits = await BatchProgress.start(cfg.job), None if dry_run else await shared_permits(cfg.provider)
    async with (nullcontext() if dry_run else open_provider(cfg, permits=permits)) as client:
        sending: list[asyncio.Future] = []  # the next batch is planned (in a thread) and started while the
        try:                                # last one is still sent, so the pace never stops at a boundary
            for batch in pending_batches(objs, cfg, finished_sources(state, done), totals, limit):
                items = unfinished(await asyncio.to_thread(plan_batch, fs, batch, cfg), done, totals)
                totals.planned += len(items)
                if dry_run:
                    planned += [dry_run_line(i) for i in items]
                    totals.estimated_prompt_tokens += sum(i.estimated_prompt_tokens or 0 for i in items)
                    continue
                sending.append(asyncio.ensure_future(call_batch(items, client, fs, cfg, run_id, totals, writer,
                                                                budget, scratch)))
                if len(sending) > 1:
                    await sending.pop(0)
                    log.info("batch done: %s", totals.line())
                    await board.update(totals)
            while sending:
                await sending.pop(0)
                log.info("batch done: %s", totals.line())
                await board.update(totals)
        finally:
            for unfinished_batch in sending:
                unfinished_batch.cancel()
    scratch.close()
    if writer:
        writer.close()
        if window.advances_watermark(limit) and not totals.not_attempted and not prefix:
            write_watermark(cfg.output, Watermark(cfg.job, started, run_id))
    totals.skipped_discover = dict(found.skipped)
    current_progress().close(totals)
    if permits is not None:
        await permits.close()
        log.info("shared limit: %s", permits.summary())
    await board.update(totals, final=True)
    await publish_summary(cfg, totals, dry_run)
    return {"run_id": run_id, "output": cfg.output.url, "since": window.since and window.since.isoformat(),
            **totals.as_dict(), "planned": planned}
