"""The backfill's shard runs: a finished shard is never run again, a failed one gets exactly one new attempt."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import flows.backfill as backfill
from tasks.plan.shards import Shard


def fake_runs(monkeypatch, existing: dict[str, str]):
    """arun_deployment over a table of idempotency key -> final state; unknown keys make a new Completed run."""
    asked: list[str] = []

    async def arun(name, parameters, idempotency_key, timeout, flow_run_name):
        asked.append(idempotency_key)
        state = existing.setdefault(idempotency_key, "COMPLETED")
        return SimpleNamespace(id=f"run-{len(asked)}" if state == "COMPLETED" else "run-failed",
                               state_type=SimpleNamespace(value=state), state_name=state.title(),
                               state=SimpleNamespace(is_final=lambda: True))

    monkeypatch.setattr(backfill, "arun_deployment", arun)
    monkeypatch.setattr(backfill, "get_run_logger", lambda: logging.getLogger("test"))
    return asked


async def test_a_failed_shard_is_run_again_once_and_a_finished_one_never(monkeypatch):
    shard, gate = Shard("cam01"), asyncio.Semaphore(1)
    key = shard.key("d")
    asked = fake_runs(monkeypatch, {key: "FAILED"})
    done = await backfill.run_shard(shard, "c.yaml", "d", "summarize/backfill-shard", 0.01, gate, True)
    assert done["state"] == "Completed" and asked == [key, f"{key}-after-run-failed"]
    again = await backfill.run_shard(shard, "c.yaml", "d", "summarize/backfill-shard", 0.01, gate, True)
    assert again["state"] == "Completed" and asked[2:] == [key, f"{key}-after-run-failed"]  # the same chain, no new run

    asked.clear()
    kept = await backfill.run_shard(shard, "c.yaml", "d", "summarize/backfill-shard", 0.01, gate, False)
    assert kept["state"] == "Failed" and asked == [key]
