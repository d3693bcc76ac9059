"""Call: prepare each request's videos, send it through the provider client, and make its ledger rows."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from dataclasses import replace
from itertools import groupby
from typing import Any, Callable

from fsspec import AbstractFileSystem

from .body import ByteBudget, RequestBody
from .client import CallResult, ProviderClient
from .config import RunConfig
from .dialects import Completion, build_payload
from .errors import InvalidOutputError, VidbatchError, redact
from .ledger import now_utc
from .media import text_tokens
from .plan import WorkItem
from .prepare import Prepared, Scratch, prepare
from .schema import repair_messages

Check = Callable[[str, list[WorkItem]], str | None]  # an answer's text and its request's items -> what is wrong


def base_row(item: WorkItem, cfg: RunConfig, run_id: str) -> dict:
    """The columns every row of an item carries, whatever its outcome."""
    p, o = cfg.provider, item.obj
    return {
        "run_id": run_id, "job": cfg.job, "created_at": now_utc(), "request_key": item.request_key,
        "source_uri": o.uri, "source_etag": o.etag, "source_size": o.size, "source_mtime": o.mtime,
        "segment_index": item.segment_index, "segment_start_s": item.segment_start_s,
        "segment_end_s": item.segment_end_s,
        "video_duration_s": item.probe.duration_s if item.probe else None,
        "has_audio": item.probe.has_audio if item.probe else None, "mime": item.mime,
        "provider": p.name, "dialect": p.dialect, "model": p.model, "delivery": p.delivery,
        "system_prompt": cfg.prompt.system, "prompt": cfg.prompt.user,
        "request_params": json.dumps({**cfg.prompt.params, **p.extra_body}, sort_keys=True),
        "estimated_prompt_tokens": item.estimated_prompt_tokens,
        "source_key": item.source_key or item.request_key, "segment_count": item.segment_count,
        "request_id": item.request_key, "pack_size": 1, "pack_index": 0,
    }


def error_row(item: WorkItem, cfg: RunConfig, run_id: str, err: VidbatchError, attempts: int = 0,
              latency_ms: int | None = None) -> dict:
    return {**base_row(item, cfg, run_id), "status": "error", "error_type": err.kind,
            "error_message": redact(str(err)), "http_status": getattr(err, "http_status", None),
            "attempts": attempts, "latency_ms": latency_ms}


def _json_or_none(text: str) -> str | None:
    s = text.strip()
    if s.startswith("```"):
        s = s.strip("`").removeprefix("json").strip()
    if not s.startswith(("{", "[")):
        return None
    try:
        return json.dumps(json.loads(s), ensure_ascii=False)
    except ValueError:
        return None


def answer_fields(c: Completion) -> dict:
    """The columns an answer fills: its text, JSON, finish reason, id and usage."""
    return {"output_text": c.text, "output_json": _json_or_none(c.text), "finish_reason": c.finish_reason,
            "response_id": c.response_id, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.total_tokens}


def result_row(item: WorkItem, cfg: RunConfig, run_id: str, result: CallResult) -> dict:
    if result.error is not None:
        row = error_row(item, cfg, run_id, result.error, result.attempts, result.latency_ms)
        if result.completion is not None:  # answered but unusable (invalid_output): keep the answer and its usage
            row.update(answer_fields(result.completion))
        return row
    return {**base_row(item, cfg, run_id), "status": "ok", **answer_fields(result.completion),
            "attempts": result.attempts, "latency_ms": result.latency_ms, "http_status": 200}


def pack_rows(pack: list[WorkItem], cfg: RunConfig, run_id: str, result: CallResult,
              prepared: list[Prepared]) -> list[dict]:
    """One row per video of a request; a packed request's usage is on its first row only."""
    request_id = pack_id(pack)
    rows = []
    for i, (item, prep) in enumerate(zip(pack, prepared)):
        row = result_row(item, cfg, run_id, result)
        row.update(media_ops=prep.ops, request_id=request_id, pack_size=len(pack), pack_index=i)
        if i > 0 and len(pack) > 1:
            row.update(prompt_tokens=None, completion_tokens=None, total_tokens=None)
            row["estimated_prompt_tokens"] = (item.estimated_prompt_tokens or 0) - _text_tokens(cfg)
        rows.append(row)
    return rows


def _text_tokens(cfg: RunConfig) -> int:
    return text_tokens(cfg.prompt.system, cfg.prompt.user)


def pack_id(pack: list[WorkItem]) -> str:
    if len(pack) == 1:
        return pack[0].request_key
    return hashlib.sha256("|".join(i.request_key for i in pack).encode()).hexdigest()


def _group(item: WorkItem, by: str) -> tuple:
    directory = item.obj.path.rsplit("/", 1)[0]
    if by == "none":
        return ()
    if by == "directory":
        return (directory,)
    hour = item.obj.mtime.strftime("%Y-%m-%dT%H") if item.obj.mtime else ""
    return directory, hour


def make_packs(items: list[WorkItem], cfg: RunConfig) -> list[list[WorkItem]]:
    """Requests to send: single items, or up to pack.max_videos items of one group within the bytes per request."""
    n, by = cfg.media.pack.max_videos, cfg.media.pack.group_by
    if n == 1:
        return [[i] for i in items]
    max_bytes = cfg.provider.media.max_bytes_per_request
    packs: list[list[WorkItem]] = [[i] for i in items if i.error is not None]
    good = [i for i in items if i.error is None]
    for _, members in groupby(sorted(good, key=lambda i: _group(i, by)), key=lambda i: _group(i, by)):
        pack: list[WorkItem] = []
        for item in members:
            size = _planned_size(item)
            if pack and (len(pack) >= n or max_bytes and sum(map(_planned_size, pack)) + size > max_bytes):
                packs.append(pack)
                pack = []
            pack.append(item)
        if pack:
            packs.append(pack)
    return packs


def _planned_size(item: WorkItem) -> int:
    """The bytes a segment is expected to take: its share of the source."""
    if item.segment_count == 1 or not item.probe or not item.duration_s:
        return item.obj.size
    return int(item.obj.size * item.duration_s / item.probe.duration_s)


def _with_usage(total: Completion, more: Completion) -> Completion:
    """`more` with the usage of both answers: a repaired request is paid twice."""
    def add(a: int | None, b: int | None) -> int | None:
        return None if a is None and b is None else (a or 0) + (b or 0)

    return replace(more, prompt_tokens=add(total.prompt_tokens, more.prompt_tokens),
                   completion_tokens=add(total.completion_tokens, more.completion_tokens),
                   total_tokens=add(total.total_tokens, more.total_tokens))


async def check_and_repair(client: ProviderClient, payload: dict, inline: dict, result: CallResult, problem: str | None,
                           check: Callable[[str], str | None], key: str, estimate: int) -> tuple[CallResult, int]:
    """(the final result, repair requests sent): an answer that failed its check gets one repair request carrying
    the answer and the error; a second failure is an InvalidOutputError that keeps the last answer and both usages."""
    if result.error is not None or problem is None:
        return result, 0
    first = result.completion
    messages = payload["messages"] + repair_messages(first.text, problem)
    second = await client.send(RequestBody({**payload, "messages": messages}, inline),
                               estimate + text_tokens(first.text, messages[-1]["content"]), f"{key}:repair")
    attempts, latency = result.attempts + second.attempts, (result.latency_ms or 0) + (second.latency_ms or 0)
    if second.error is not None:
        return CallResult(first, second.error, attempts, latency), 1
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
        async with gate, budget.hold(sum(map(_planned_size, pack))):
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
                estimate = sum(i.estimated_prompt_tokens or 0 for i in pack) - (len(pack) - 1) * _text_tokens(cfg)
                result = await client.send(RequestBody(payload, inline), estimate, pack_id(pack))
                if check is not None:
                    problem = check(result.completion.text, pack) if result.error is None else None
                    result, repairs = await check_and_repair(client, payload, inline, result, problem,
                                                             lambda text: check(text, pack), pack_id(pack), estimate)
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
