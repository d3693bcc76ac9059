"""The backfill flow: a date range or prefixes split into shards, each a child run of the summarize deployment."""

from __future__ import annotations

import asyncio

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import arun_deployment
from prefect.runtime import flow_run

from flows.prefect.artifacts import child_totals, publish_backfill
from flows.prefect.shared_limits import close_turns, ensure_shared_limits, on_prefect_server, open_turns
from tasks.call.shared_pacing import HOLD_S
from tasks.call.turns import turns_name
from tasks.config.load import load_config
from tasks.errors import VidbatchError
from tasks.plan.shards import Shard, config_digest, shards_for

SHARD_DEPLOYMENT = "summarize/backfill-shard"
RERUN_STATES = {"FAILED", "CRASHED", "CANCELLED"}


class BackfillError(VidbatchError):
    """Some shards did not complete; rerunning the backfill reruns exactly those."""


async def run_shard(shard: Shard, config: str, digest: str, deployment: str, poll_s: float, gate: asyncio.Semaphore,
                    retry_failed: bool, turns: str | None = None) -> dict:
    """The shard's flow run: found by its idempotency key, rerun past a failed attempt, waited for to its end.

    A failed attempt's successor is keyed by the failed run's id, so every rerun of the backfill walks
    the same chain: a finished shard is never run again, and only a failed one gets a new attempt.
    """
    log = get_run_logger()
    key = shard.key(digest)
    parameters = {**shard.parameters(config), **({"turns": turns} if turns else {})}
    async with gate:
        while True:
            run = await arun_deployment(deployment, parameters=parameters, idempotency_key=key,
                                        timeout=0, flow_run_name=f"shard {shard.label}")
            if run.state_type is not None and run.state_type.value in RERUN_STATES and retry_failed:
                log.info("shard %s: attempt %s ended %s; running it again", shard.label, run.id, run.state_name)
                key = f"{shard.key(digest)}-after-{run.id}"
                continue
            break
        if not (run.state and run.state.is_final()):
            async with get_client() as client:
                while not run.state or not run.state.is_final():
                    await asyncio.sleep(poll_s)
                    run = await client.read_flow_run(run.id)
    log.info("shard %s: %s (flow run %s)", shard.label, run.state_name, run.id)
    return {"shard": shard.label, "state": run.state_name, "flow_run_id": str(run.id)}


@flow(name="backfill", persist_result=False)
async def backfill(config: str, since: str | None = None, until: str | None = None, prefixes: list[str] | None = None,
                   max_parallel: int = 4, retry_failed: bool = True, deployment: str = SHARD_DEPLOYMENT,
                   poll_s: float = 2.0, start_ahead: int | None = None) -> dict:
    """Summarize a date range (by day) and/or a list of prefixes, one child run of summarize per shard.

    `max_parallel` shards send at once; `start_ahead` more (default: `max_parallel`) are started and wait,
    ready, for a turn to send (tasks/call/turns.py), so the provider's rate is not left idle while a shard's
    process starts. Fewer than `max_parallel` leave the shards that end together (shards of one size do)
    to replacements that start cold."""
    log = get_run_logger()
    cfg = load_config(config)
    shards = shards_for(cfg.source, since, until, prefixes)
    if since and not cfg.source.layout:
        log.info("source.layout is not set: a day cannot be mapped to directories, so each prefix (or the whole "
                 "source) is one shard over the whole range, listed once; set source.layout to split by day")
    if cfg.provider.limits.shared and on_prefect_server():
        for lim in await ensure_shared_limits(cfg.provider):
            log.info("shared limit %s: %d slots, each returned %.1f s after its answer", lim.name, lim.capacity,
                     HOLD_S)
    parallel = max(1, max_parallel)
    ahead = parallel if start_ahead is None else max(0, start_ahead)
    turns = turns_name(str(flow_run.id)) if ahead and len(shards) > parallel and flow_run.id else None
    log.info("backfill of %s: %d shards, %d sending at a time%s", cfg.job, len(shards), parallel,
             f", {ahead} more started ahead to wait for a turn ({turns})" if turns else "")
    digest, gate = config_digest(config), asyncio.Semaphore(parallel + (ahead if turns else 0))
    if turns:
        await open_turns(turns, parallel)
    try:
        done = await asyncio.gather(*(run_shard(s, config, digest, deployment, poll_s, gate, retry_failed, turns)
                                      for s in shards))
    finally:
        if turns:
            await close_turns(turns)
    totals = await child_totals([d["flow_run_id"] for d in done if d["state"] == "Completed"])
    summed = await publish_backfill(cfg.job, done, totals)
    failed = [d["shard"] for d in done if d["state"] != "Completed"]
    if failed:
        raise BackfillError(f"{len(failed)} of {len(shards)} shards did not complete: {', '.join(failed[:20])}; "
                            "run the backfill again to rerun only those")
    return {"shards": done, **summed}
