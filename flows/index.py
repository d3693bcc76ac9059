"""The index flow: summarize's run loop with a JSON schema per segment, then entries and whole-video summaries."""

from __future__ import annotations

import asyncio

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.run import Run, RunOptions, run_batches
from tasks.config.load import load_index_config
from tasks.index.entries import write_entries
from tasks.index.indexer import Indexer, VideoTodo


@task(name="index-videos", cache_policy=NO_CACHE, persist_result=False)
async def index_videos(todos: list[VideoTodo], indexer: Indexer, run: Run) -> int:
    """Reduce calls and entries for videos whose segments are all answered; returns the entries written."""
    entries = await indexer.finish(todos, run.client, run.run_id, run.record)
    await asyncio.to_thread(write_entries, entries, indexer.entries_output, run.run_id)
    return len(entries)


@flow(name="index", persist_result=False)
async def index(config: str, since: str | None = None, until: str | None = None, limit: int | None = None,
                dry_run: bool = False, retry_failed: bool = False, all_errors: bool = False, force: bool = False,
                incremental: bool = False, prefix: str | None = None, budget: float | None = None) -> dict:
    """Index every video under the config's source: entries per segment on its timeline, and a whole-video summary."""
    log = get_run_logger()
    indexer = Indexer(load_index_config(config))

    async def finish(run: Run) -> dict:
        """Entries and reduce calls for the listed videos that miss them, a chunk of listed URIs at a time."""
        entries, size = 0, run.cfg.output.batch_size
        assert run.listed is not None, "run_batches keeps the listed URIs for a finish step"
        ledger, table = await asyncio.to_thread(indexer.stores)
        for uris in run.listed.chunks():
            todos = await asyncio.to_thread(indexer.todo, uris, ledger, table, run.done)
            for batch in (todos[i:i + size] for i in range(0, len(todos), size)):
                entries += await index_videos(batch, indexer, run)
                log.info("indexed %d videos: %d entries so far; %s", len(batch), entries, run.totals.line())
        return {"entries": entries}

    opts = RunOptions(since, until, limit, dry_run, retry_failed, all_errors, force, incremental, prefix, budget)
    # the config's segments, packs and prompt, with the schema asked for and ledger/ as output
    return await run_batches("index", indexer.run_config, opts, check=indexer.check,
                             finish=finish, output=indexer.config.output.url,
                             extra={"index": indexer.entries_output.url, "entries": 0})
