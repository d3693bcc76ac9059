"""The run loop of summarize and index: list, plan the next batch while the last one is sent, record, report."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fsspec import AbstractFileSystem
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.prefect.artifacts import BatchProgress, publish_summary
from flows.prefect.shared_budget import share_day_budget
from flows.prefect.shared_limits import backfill_turn, shared_permits
from flows.stop import Stopper, stopped
from tasks.call.budget import money_summary, open_spend
from tasks.call.client import ProviderClient
from tasks.call.provider import open_provider
from tasks.call.send import Check, call_items
from tasks.config.run import RunConfig
from tasks.discover.listing import DiscoverStats, SourceObject, iter_objects, open_source
from tasks.plan.batches import pending_batches, run_window
from tasks.plan.bill import bill_line, check_reservations, with_output
from tasks.plan.items import WorkItem, empty_item, plan_items, request_key, unfinished
from tasks.plan.packs import make_packs
from tasks.prepare.body import ByteBudget
from tasks.prepare.delivery import check_delivery
from tasks.prepare.transform import Scratch, scratch_prefix
from tasks.record.claims import Claims, RunRegistry
from tasks.record.journal import LedgerWriter, recover_journal
from tasks.record.rows import empty_row
from tasks.record.spending import mean_output_tokens
from tasks.record.state import Listed, RunState, StateStore
from tasks.record.tables import PARTIAL, now_utc
from tasks.record.totals import RunTotals, current_progress
from tasks.record.watermark import Watermark, watermark_since, write_watermark
from tasks.record.writable import check_writable


@dataclass(frozen=True)
class RunOptions:
    """What a run is asked to do beyond its config: the flags of `vidbatch run` and `vidbatch index`."""

    since: str | None = None
    until: str | None = None
    limit: int | None = None
    dry_run: bool = False
    retry_failed: bool = False
    all_errors: bool = False
    force: bool = False
    incremental: bool = False
    prefix: str | None = None
    budget: float | None = None  # --budget: what this run may spend, in the prices' currency
    turns: str | None = None  # a backfill shard: the backfill's turns, one taken before the first request

    @property
    def from_watermark(self) -> bool:
        """An incremental run lists from the watermark, unless it was asked to send finished keys again."""
        return self.incremental and not (self.retry_failed or self.all_errors or self.force)


@dataclass
class Run:
    """A run in progress, as its batches and its `finish` hook see it."""

    cfg: RunConfig
    run_id: str
    client: ProviderClient
    writer: LedgerWriter
    done: set[str]
    totals: RunTotals = field(default_factory=RunTotals)
    listed: Listed | None = None  # the URIs of every object the run listed, when `finish` wants them
    pending: set[asyncio.Future] = field(default_factory=set)  # rows being journaled: a stop waits for them

    async def record(self, row: dict) -> None:
        """A finished row: journaled at once, in the ledger by the flush policy, counted, shown."""
        journaled = asyncio.ensure_future(asyncio.to_thread(self.writer.add, row))
        self.pending.add(journaled)

        def counted(done: asyncio.Future) -> None:  # counted once in the journal, even if a stop cancels the wait
            self.pending.discard(done)
            if not done.cancelled() and done.exception() is None:
                self.totals.add_row(row)
                current_progress().update(self.totals)

        journaled.add_done_callback(counted)
        await asyncio.shield(journaled)


Finish = Callable[[Run], Awaitable[dict[str, Any]]]  # after the last batch, the client still open: more result keys


@task(name="plan-batch", cache_policy=NO_CACHE, persist_result=False)
def plan_batch(fs: AbstractFileSystem, objs: list, cfg: RunConfig) -> list[WorkItem]:
    return plan_items(fs, objs, cfg)


@task(name="call-batch", cache_policy=NO_CACHE, persist_result=False)
async def call_batch(items: list[WorkItem], run: Run, fs: AbstractFileSystem, budget: ByteBudget, scratch: Scratch,
                     check: Check | None = None) -> list[dict]:
    return await call_items(items, run.client, fs, run.cfg, run.run_id, run.record, budget, scratch, check)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def dry_run_line(item: WorkItem) -> dict:
    pr = item.probe
    return {"source_uri": item.obj.uri, "duration_s": item.duration_s, "has_audio": pr.has_audio if pr else None,
            "mime": item.mime, "estimated_prompt_tokens": item.estimated_prompt_tokens,
            "segment": f"{item.segment_index + 1}/{item.segment_count} at {item.segment_start_s:.1f} s"
            if item.segment_count > 1 else "", "ops": ",".join(item.ops),
            "error": str(item.error) if item.error else None}


async def record_empty(empty: list, cfg: RunConfig, run_id: str, writer: LedgerWriter, state: RunState) -> None:
    """A `skipped` row (error_type `empty`) for each zero-byte object listed so far that has none yet."""
    keyed, empty[:] = {request_key(obj, cfg): obj for obj in empty}, []
    finished = await asyncio.to_thread(state.finished, keyed)  # their rows from earlier runs, looked up
    for key, obj in keyed.items():
        if key not in finished and key not in state.done:
            state.done.add(key)
            await asyncio.to_thread(writer.add, empty_row(empty_item(obj, cfg, key), cfg, run_id))


async def run_batches(flow_name: str, cfg: RunConfig, opts: RunOptions, check: Check | None = None,
                      finish: Finish | None = None, output: str | None = None,
                      extra: dict[str, Any] | None = None) -> dict:
    """List the source, plan each batch of unfinished objects (the next one while the last is sent), send and record
    them, then `finish`; move the watermark when the whole window is done. Returns the run's result, whose `output`
    is `output` (default: the ledger) and which holds `extra` updated by what `finish` returned."""
    registries: list[RunRegistry] = []
    try:
        return await _run_batches(flow_name, cfg, opts, check, finish, output, extra, registries)
    finally:
        for registry in registries:  # whatever failed: no heartbeat outlives the run
            registry.stop()


async def _run_batches(flow_name: str, cfg: RunConfig, opts: RunOptions, check: Check | None,
                       finish: Finish | None, output: str | None, extra: dict[str, Any] | None,
                       registries: list[RunRegistry]) -> dict:
    log = get_run_logger()
    run_id, started = str(flow_run.id or uuid.uuid4()), now_utc()
    fs, root = open_source(cfg.source)
    check_delivery(fs, cfg.provider)
    mark = watermark_since(cfg.output, cfg.job, cfg.source.url) if opts.from_watermark else None
    window = run_window(cfg, opts.since, opts.until, opts.from_watermark, mark)
    registry = None
    if not opts.dry_run:
        check_writable(cfg.output)  # before the first request: a run that cannot record must not pay
        registry = RunRegistry(cfg.output, run_id, cfg.job)  # before the state is read: see tasks/record/claims.py
        registries.append(registry)
        for other in await asyncio.to_thread(registry.start):
            log.warning("another run writes this output: %s; the videos it claims are left to it", other.describe())
    if not opts.dry_run and (recovered := recover_journal(cfg.output, run_id)):
        log.info("recovered %d finished rows from the journal of a run that stopped", recovered)
    store = None if opts.force else await asyncio.to_thread(StateStore.open, cfg.output)
    if store is not None and store.stats.folded:
        log.info("run state: folded %d ledger files into a new base of %d keys", store.stats.delta_files,
                 store.stats.base_rows)
    listed = Listed() if finish is not None and not opts.dry_run else None  # what `finish` looks up after the batches
    state = RunState(store, opts.retry_failed, opts.all_errors, opts.force, listed)
    done = state.done  # grows as each chunk of listed objects is looked up
    spend = open_spend(cfg, opts.budget)  # ConfigError when a budget cannot be held (no prices, no output bound)
    if cfg.provider.prices is None:
        log.warning("provider %r has no prices (provider.prices is null): the cost columns are null",
                    cfg.provider.name)
    expected_output = mean_output_tokens(cfg.output, cfg.job, cfg.provider.model) or cfg.output_allowance()
    checked = [spend is None]
    totals, found, planned, more = RunTotals(), DiscoverStats(), [], {}
    empty: list = []  # zero-byte objects: counted as skipped_empty, and each gets a `skipped` row (record_empty)
    objs = iter_objects(fs, root, cfg.source, window.since, window.until, found, scratch_prefix(cfg), empty,
                        opts.prefix or "")
    batches = pending_batches(objs, cfg, state.finished, totals, opts.limit)
    board = await BatchProgress.start(cfg.job)
    stopper = Stopper()  # installed while requests are sent
    claims = Claims(registry) if registry is not None else None
    holders: dict[str, int] = {}

    async def claimed(batch: dict[str, SourceObject]) -> dict[str, SourceObject]:
        """The batch less the videos another run has claimed (each claim is one exclusive create)."""
        if claims is None:
            return batch
        others = await asyncio.to_thread(claims.claim, batch)
        for holder in others.values():
            name = holder.describe() if holder else "a run whose record is gone"
            holders[name] = holders.get(name, 0) + 1
        totals.claimed += len(others)
        return {key: obj for key, obj in batch.items() if key not in others}

    async def plan(batch: dict[str, SourceObject]) -> list[WorkItem]:
        """The batch's items less the segments a previous run finished (probing runs in a thread)."""
        items = unfinished(await asyncio.to_thread(plan_batch, fs, list(batch.values()), cfg), done, totals)
        items = with_output(items, expected_output)
        if not checked[0] and spend is not None and spend.cap is not None:  # the first batch, before anything is sent
            check_reservations(make_packs(items, cfg), spend.cap, spend.reservation)
            checked[0] = True
        totals.planned += len(items)
        return items

    if opts.dry_run:
        for batch in batches:
            items = await plan(batch)
            planned += [{**dry_run_line(i), **bill_line(i, cfg)} for i in items]
            totals.estimated_prompt_tokens += sum(i.estimated_prompt_tokens or 0 for i in items)
    else:
        permits = await shared_permits(cfg.provider)
        share_day_budget(spend, cfg.provider)
        writer, budget = LedgerWriter(cfg.output, run_id), ByteBudget(cfg.media.inflight_bytes)
        assert registry is not None  # every run that sends has one
        scratch = await asyncio.to_thread(Scratch, cfg, run_id, registry.sweep)  # sweeps the scratch of killed runs
        swept = scratch.swept + await asyncio.to_thread(registry.sweep, writer.fs, f"{writer.root}/{PARTIAL}")
        if swept:
            log.info("removed what %d runs that were killed left: %s", len(swept), ", ".join(swept[:3]))
        stopper.install()
        started_batches: list[asyncio.Future] = []
        run: Run | None = None
        try:
            async with open_provider(cfg, permits=permits, spend=spend) as client, \
                    contextlib.AsyncExitStack() as turn:
                run = Run(cfg, run_id, client, writer, done, totals, listed)

                async def settled(batch: asyncio.Future) -> None:
                    await batch
                    log.info("batch done: %s", totals.line())
                    await board.update(totals)

                sending: list[asyncio.Future] = []  # the next batch is planned (in a thread) and started while the
                try:                                # last one is still sent, so the pace never stops at a boundary
                    for pending in batches:
                        await record_empty(empty, cfg, run_id, writer, state)
                        if not (batch := await claimed(pending)):
                            continue
                        items = await plan(batch)
                        if opts.turns and not started_batches:  # a shard started ahead: it waits for its turn here
                            log.info("first batch planned: waiting for a turn of %s", opts.turns)
                            await turn.enter_async_context(backfill_turn(opts.turns))
                        sending.append(asyncio.ensure_future(call_batch(items, run, fs, budget, scratch, check)))
                        started_batches.append(sending[-1])
                        if len(sending) > 1:
                            await settled(sending.pop(0))
                    await record_empty(empty, cfg, run_id, writer, state)
                    while sending:
                        await settled(sending.pop(0))
                finally:
                    for unsent in sending:
                        unsent.cancel()
                if finish is not None:
                    writer.flush()  # every answer is in the ledger: what finish reads
                    more = await finish(run)
        except asyncio.CancelledError:
            if stopper.signum is None:
                raise
            log.warning("stopped by %s: in-flight requests abandoned, finished rows flushed",
                        signal_name(stopper.signum))
            for sent in started_batches:
                sent.cancel()
            await asyncio.wait([*started_batches, *(run.pending if run else ())], timeout=5)  # cleanups, journal
        finally:
            scratch.close()
            if listed is not None:
                listed.close()
        writer.close()
        if registry is not None:
            registry.end()  # only once every row is in the ledger: a run that starts after this reads them there
        stopper.remove()
        for name, count in holders.items():
            log.warning("%d videos not sent: claimed by %s", count, name)
        if found.listed == 0:  # a mistyped prefix lists nothing: the watermark stays for the source that exists
            log.warning("source.url %r listed no object at all%s: the watermark is not moved", cfg.source.url,
                        f" below prefix {opts.prefix!r}" if opts.prefix else "")
        elif stopper.signum is None and window.advances_watermark(opts.limit) and not totals.not_attempted \
                and not totals.claimed and not opts.prefix:
            write_watermark(cfg.output, Watermark(cfg.job, started, run_id, cfg.source.url))
        if permits is not None:
            await permits.close()
            log.info("shared limit: %s", permits.summary())
    totals.skipped_discover = dict(found.skipped)
    log.info("listed %d objects of %s in %d listing requests", found.listed, cfg.source.url, found.list_calls)
    current_progress().close(totals)
    await board.update(totals, final=True)
    result = {"run_id": run_id, "output": output or cfg.output.url, "ledger": cfg.output.url,
              "since": window.since and window.since.isoformat(), **totals.as_dict(), **(extra or {}), **more,
              "planned": planned, **money_summary(cfg, spend, opts.dry_run)}
    if stopper.signum is not None:
        result["stopped"] = signal_name(stopper.signum)
    await publish_summary(flow_name, cfg.job, result["output"], {"dry_run": opts.dry_run, **result})
    if stopper.signum is not None:
        raise await stopped(stopper.signum, result)
    return result
