"""The index flow: summarize's plan and calls with a JSON schema per segment, then entries and whole-video summaries."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from contextlib import nullcontext

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.cli.console import Progress, current_progress, set_progress
from flows.prefect.artifacts import BatchProgress
from flows.prefect.shared_limits import shared_permits
from flows.summarize import call_batch, dry_run_line, plan_batch
from tasks.call.provider import open_provider
from tasks.config.load import load_index_config
from tasks.config.run import parse_when
from tasks.discover.listing import DiscoverStats, iter_objects, open_source
from tasks.errors import VidbatchError
from tasks.index.entries import write_entries
from tasks.index.indexer import Indexer, VideoTodo
from tasks.plan.batches import pending_batches, run_window
from tasks.plan.items import unfinished
from tasks.prepare.body import ByteBudget
from tasks.prepare.delivery import check_delivery
from tasks.prepare.transform import Scratch, scratch_prefix
from tasks.record.journal import LedgerWriter, recover_journal
from tasks.record.ledger import finished_keys, finished_sources, latest_state
from tasks.record.tables import now_utc
from tasks.record.totals import RunTotals
from tasks.record.watermark import Watermark, write_watermark


@task(name="index-videos", cache_policy=NO_CACHE, persist_result=False)
async def index_videos(todos: list[VideoTodo], indexer: Indexer, client, run_id: str, totals: RunTotals,
                       writer: LedgerWriter) -> int:
    """Reduce calls and entries for videos whose segments are all answered; returns the entries written."""
    progress = current_progress()

    async def record(row: dict) -> None:
        await asyncio.to_thread(writer.add, row)
        totals.add_row(row)
        progress.update(totals)

    entries = await indexer.finish(todos, client, run_id, record)
    await asyncio.to_thread(write_entries, entries, indexer.entries_output, run_id)
    return len(entries)


async def publish_summary(job: str, output: str, result: dict) -> None:
    key = "index-" + re.sub(r"[^a-z0-9-]+", "-", job.lower()).strip("-")
    await acreate_table_artifact(table=[{"job": job, **{k: v for k, v in result.items() if k != "planned"}}],
                                 key=key, description=f"vidbatch index: {job} -> {output}")


@flow(name="index", persist_result=False)
async def index(config: str, since: str | None = None, until: str | None = None, limit: int | None = None,
                dry_run: bool = False, retry_failed: bool = False, all_errors: bool = False, force: bool = False,
                incremental: bool = False) -> dict:
    """Index every video under the config's source: entries per segment on its timeline, and a whole-video summary."""
    log = get_run_logger()
    indexer = Indexer(load_index_config(config))
    cfg = indexer.run_config  # the config's segments, packs and prompt, with the schema asked for and ledger/ output
    run_id, started = str(flow_run.id or uuid.uuid4()), now_utc()
    fs, root = open_source(cfg.source)
    check_delivery(fs, cfg.provider)
    window = run_window(cfg, since, until, incremental and not (retry_failed or all_errors or force))
    if not dry_run and (recovered := recover_journal(cfg.output, run_id)):
        log.info("recovered %d finished rows from the journal of a run that stopped", recovered)
    state = latest_state(cfg.output)
    done = finished_keys(state, retry_failed, all_errors, force)
    totals, found, planned, entries = RunTotals(), DiscoverStats(), [], 0
    objs = iter_objects(fs, root, cfg.source, window.since, window.until, found, scratch_prefix(cfg))
    writer = LedgerWriter(cfg.output, run_id) if not dry_run else None
    budget, scratch = ByteBudget(cfg.media.inflight_bytes), Scratch(cfg)
    board, permits = await BatchProgress.start(cfg.job), None if dry_run else await shared_permits(cfg.provider)
    async with (nullcontext() if dry_run else open_provider(cfg, permits=permits)) as client:
        for batch in pending_batches(objs, cfg, finished_sources(state, done), totals, limit):
            items = unfinished(plan_batch(fs, batch, cfg), done, totals)
            totals.planned += len(items)
            if dry_run:
                planned += [dry_run_line(i) for i in items]
                totals.estimated_prompt_tokens += sum(i.estimated_prompt_tokens or 0 for i in items)
                continue
            await call_batch(items, client, fs, cfg, run_id, totals, writer, budget, scratch, check=indexer.check)
            log.info("batch done: %s", totals.line())
            await board.update(totals)
        if writer:
            writer.flush()  # the answers are in the ledger: entries and summaries are made from it
            for todos in indexer.todo(done, cfg.output.batch_size):
                entries += await index_videos(todos, indexer, client, run_id, totals, writer)
                log.info("indexed %d videos: %d entries so far; %s", len(todos), entries, totals.line())
    scratch.close()
    if writer:
        writer.close()
        if window.advances_watermark(limit) and not totals.not_attempted:
            write_watermark(cfg.output, Watermark(cfg.job, started, run_id))
    totals.skipped_discover = dict(found.skipped)
    current_progress().close(totals)
    if permits is not None:
        await permits.close()
        log.info("shared limit: %s", permits.summary())
    await board.update(totals, final=True)
    result = {"run_id": run_id, "output": indexer.config.output.url, "ledger": cfg.output.url,
              "index": indexer.entries_output.url, "since": window.since and window.since.isoformat(),
              **totals.as_dict(), "entries": entries, "planned": planned}
    await publish_summary(cfg.job, indexer.config.output.url, result)
    return result


def cli(args: argparse.Namespace) -> int:
    """`vidbatch index CONFIG ...`: exit 0 all ok, 1 some item in error, 2 config or source wrong."""
    from flows.cli.console import print_plan, print_summary

    try:
        load_index_config(args.config)  # fail on a bad config before Prefect starts
        parse_when(args.since), parse_when(args.until, "--until")
    except VidbatchError as e:
        print(f"vidbatch: {e}", file=sys.stderr)
        return 2
    set_progress(Progress(enabled=not args.quiet))
    try:
        result = asyncio.run(index(config=args.config, since=args.since, until=args.until, limit=args.limit,
                                   dry_run=args.dry_run, retry_failed=args.retry_failed, all_errors=args.all_errors,
                                   force=args.force, incremental=args.since_last_run))
    except VidbatchError as e:
        print(f"vidbatch: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print_plan(result["planned"])
        print(f"total estimated prompt tokens: {result['estimated_prompt_tokens']:,} "
              f"for {len(result['planned'])} requests")
    print_summary({**result, "output": result["ledger"]})
    print(f"  entries written  {result['entries']:,} to {result['index']}")
    return 1 if result["error"] else 0
