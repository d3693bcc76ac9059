"""The summarize flow: list new videos, probe them, send them in batches, record every answer."""

from __future__ import annotations

from prefect import flow

from flows.run import RunOptions, run_batches
from tasks.config.load import load_config


@flow(name="summarize", persist_result=False)
async def summarize(config: str, since: str | None = None, until: str | None = None, limit: int | None = None,
                    dry_run: bool = False, retry_failed: bool = False, all_errors: bool = False, force: bool = False,
                    incremental: bool = False, prefix: str | None = None, budget: float | None = None,
                    turns: str | None = None) -> dict:
    """Summarize every video under the config's source (or its `prefix` below it) that the ledger has not finished.

    A prefix narrows the listing, not the source: paths stay relative to source.url for its globs and layout.
    `turns` is set by a backfill: the name of its turns, one of which this run takes before its first request."""
    opts = RunOptions(since, until, limit, dry_run, retry_failed, all_errors, force, incremental, prefix, budget,
                      turns)
    return await run_batches("summarize", load_config(config), opts)
