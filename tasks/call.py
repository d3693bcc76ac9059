"""Call: build each item's payload, send it through the provider client, and make its ledger row."""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any, Callable

from fsspec import AbstractFileSystem

from .client import CallResult, ProviderClient
from .config import RunConfig
from .delivery import video_ref
from .dialects import build_payload
from .errors import VidbatchError, redact
from .ledger import now_utc
from .plan import WorkItem


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


def result_row(item: WorkItem, cfg: RunConfig, run_id: str, result: CallResult) -> dict:
    if result.error is not None:
        return error_row(item, cfg, run_id, result.error, result.attempts, result.latency_ms)
    c = result.completion
    return {**base_row(item, cfg, run_id), "status": "ok", "output_text": c.text,
            "output_json": _json_or_none(c.text), "finish_reason": c.finish_reason, "response_id": c.response_id,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.total_tokens, "attempts": result.attempts, "latency_ms": result.latency_ms,
            "http_status": 200}


async def call_items(items: list[WorkItem], client: ProviderClient, fs: AbstractFileSystem, cfg: RunConfig,
                     run_id: str, on_row: Callable[[dict], Any] | None = None) -> list[dict]:
    """Send a batch concurrently; only `concurrency + 2` payloads exist at any moment; on_row may be async."""
    gate = asyncio.Semaphore(cfg.provider.limits.concurrency + 2)
    p = cfg.provider

    async def one(item: WorkItem) -> dict:
        if item.error is not None:
            row = error_row(item, cfg, run_id, item.error)
        else:
            async with gate:
                try:
                    ref = await asyncio.to_thread(video_ref, fs, item.obj, p)
                except VidbatchError as e:
                    row = error_row(item, cfg, run_id, e)
                else:
                    body = build_payload(p.dialect, p.model, cfg.prompt.system, cfg.prompt.user, [ref],
                                         cfg.prompt.params, p.extra_body)
                    del ref
                    result = await client.send(body, item.estimated_prompt_tokens or 0, item.request_key)
                    row = result_row(item, cfg, run_id, result)
        if on_row:
            done = on_row(row)
            if inspect.isawaitable(done):
                await done
        return row

    return list(await asyncio.gather(*(one(i) for i in items)))


