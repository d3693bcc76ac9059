"""Send a batch: prepare each request's videos, send it through the provider client, record its rows."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fsspec import AbstractFileSystem

from tasks.call.client import CallResult, ProviderClient
from tasks.call.responses import Completion
from tasks.call.structured import repair_messages
from tasks.config.run import RunConfig
from tasks.dialects.registry import build_payload
from tasks.errors import InvalidOutputError, VidbatchError
from tasks.media.tokens import Estimate, text_tokens
from tasks.plan.items import WorkItem, prompt_text_tokens
from tasks.plan.packs import make_packs, pack_estimate, pack_id, planned_size
from tasks.prepare.body import ByteBudget, RequestBody
from tasks.prepare.transform import Prepared, Scratch, prepare
from tasks.record.rows import error_row, pack_rows

Check = Callable[[str, list[WorkItem]], str | None]  # an answer's text and its request's items -> what is wrong


def _with_usage(total: Completion, more: Completion) -> Completion:
    """`more` with the usage of both answers: a repaired request is paid twice."""
    def add(a: int | None, b: int | None) -> int | None:
        return None if a is None and b is None else (a or 0) + (b or 0)

    return replace(more, prompt_tokens=add(total.prompt_tokens, more.prompt_tokens),
                   completion_tokens=add(total.completion_tokens, more.completion_tokens),
                   total_tokens=add(total.total_tokens, more.total_tokens), usage=add_usage(total.usage, more.usage))


def add_usage(a: dict | None, b: dict | None) -> dict | None:
    """Two usage objects as one: numbers added (details and a gateway's cost too), the rest from the later one."""
    if a is None or b is None:
        return b if a is None else a
    out = dict(a)
    for k, v in b.items():
        old = out.get(k)
        if isinstance(v, dict) and isinstance(old, dict):
            out[k] = add_usage(old, v)
        elif isinstance(v, (int, float)) and isinstance(old, (int, float)) and not isinstance(v, bool):
            out[k] = old + v
        else:
            out[k] = v
    return out


async def check_and_repair(client: ProviderClient, payload: dict, inline: dict, result: CallResult, problem: str | None,
                           check: Callable[[str], str | None], key: str, estimate: int,
                           split: Estimate | None = None) -> tuple[CallResult, int]:
    """(the final result, repair requests sent): an answer that failed its check gets one repair request carrying
    the answer and the error; a second failure is an InvalidOutputError that keeps the last answer and both usages."""
    if result.error is not None or problem is None:
        return result, 0
    first = result.completion
    assert first is not None  # ProviderClient.send returns a completion whenever error is None
    messages = payload["messages"] + repair_messages(first.text, problem)
    more = text_tokens(first.text, messages[-1]["content"])
    second = await client.send(RequestBody({**payload, "messages": messages}, inline), estimate + more, f"{key}:repair",
                               (split or Estimate(text=estimate)) + Estimate(text=more))
    attempts, latency = result.attempts + second.attempts, (result.latency_ms or 0) + (second.latency_ms or 0)
    if second.error is not None:
        return CallResult(first, second.error, attempts, latency), 1
    assert second.completion is not None  # as above: no error, so a completion
    answer = _with_usage(first, second.completion)
    again = check(answer.text)
    if again is None:
        return CallResult(answer, None, attempts, latency), 1
    err = InvalidOutputError(f"the answer does not match the JSON schema after one repair request: {again}", 200)
    return CallResult(answer, err, attempts, latency), 1


async def call_items(items: list[WorkItem], client: ProviderClient, fs: AbstractFileSystem, cfg: RunConfig,
                     run_id: str, on_row: Callable[[dict], Any] | None = None,
                     budget: ByteBudget | None = None, scratch: Scratch | None = None,
                     check: Check | None = None) -> list[dict]:
    """Send a batch concurrently; at most `concurrency + 2` requests are prepared at once, within the byte budget.

    With `check`, each answer is checked (e.g. against a JSON schema) and repaired once (check_and_repair).
    """
    gate = asyncio.Semaphore(cfg.provider.limits.concurrency + 2)
    budget = budget or ByteBudget(cfg.media.inflight_bytes)
    own_scratch = scratch is None
    scratch = scratch or Scratch(cfg)
    p = cfg.provider

    async def emit(rows: list[dict]) -> None:
        for row in rows:
            if on_row:
                done = on_row(row)
                if inspect.isawaitable(done):
                    await done

    async def one(pack: list[WorkItem]) -> list[dict]:
        if pack[0].error is not None:
            rows = [error_row(pack[0], cfg, run_id, pack[0].error)]
            await emit(rows)
            return rows
        async with gate, budget.hold(sum(map(planned_size, pack))):
            prepared: list[Prepared] = []
            try:
                for item in pack:
                    prepared.append(await asyncio.to_thread(prepare, item, fs, cfg, scratch))
            except VidbatchError as e:
                for done in prepared:
                    done.cleanup()
                rows = [{**error_row(item, cfg, run_id, e), "request_id": pack_id(pack), "pack_size": len(pack),
                         "pack_index": i} for i, item in enumerate(pack)]
                await emit(rows)
                return rows
            try:
                refs = [prep.ref for prep in prepared]
                payload = build_payload(p.dialect, p.model, cfg.prompt.system, cfg.prompt.user, refs,
                                        cfg.prompt.params, p.extra_body)
                inline = {r.url: r.inline for r in refs if r.inline is not None}
                estimate = sum(i.estimated_prompt_tokens or 0 for i in pack) - (len(pack) - 1) * prompt_text_tokens(cfg)
                split = pack_estimate(pack)
                result = await client.send(RequestBody(payload, inline), estimate, pack_id(pack), split)
                if check is not None:
                    answered = result.completion if result.error is None else None
                    problem = check(answered.text, pack) if answered is not None else None
                    result, repairs = await check_and_repair(client, payload, inline, result, problem,
                                                             lambda text: check(text, pack), pack_id(pack), estimate,
                                                             split)
                rows = pack_rows(pack, cfg, run_id, result, prepared)
                if check is not None:
                    for row in rows:
                        row["repairs"] = repairs
                await emit(rows)  # recorded (journaled) before the scratch copies go
            finally:
                for done in prepared:
                    await asyncio.to_thread(done.cleanup)
            return rows

    try:
        results = await asyncio.gather(*(one(pack) for pack in make_packs(items, cfg)))
    finally:
        if own_scratch:
            scratch.close()
    return [row for rows in results for row in rows]
