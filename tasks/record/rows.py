"""Ledger rows for every outcome of a request: ok, error, or answered but unusable."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Protocol

from tasks.config.prices import Prices
from tasks.config.run import RunConfig
from tasks.errors import EmptyError, VidbatchError, redact
from tasks.media.tokens import Estimate
from tasks.plan.items import WorkItem, prompt_text_tokens
from tasks.plan.packs import pack_estimate, pack_id
from tasks.prepare.transform import Prepared
from tasks.record.cost import estimate_columns, usage_columns
from tasks.record.tables import now_utc
from tasks.secrets import redact_keys


class Answer(Protocol):
    """What a row keeps of a provider's answer (tasks.call.responses.Completion is one)."""

    @property
    def text(self) -> str: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def response_id(self) -> str | None: ...
    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def completion_tokens(self) -> int | None: ...
    @property
    def total_tokens(self) -> int | None: ...
    @property
    def usage(self) -> dict | None: ...


class Outcome(Protocol):
    """What a row keeps of a request's outcome (tasks.call.client.CallResult is one); record never imports call."""

    @property
    def completion(self) -> Answer | None: ...
    @property
    def error(self) -> VidbatchError | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def latency_ms(self) -> int | None: ...


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
        "request_params": json.dumps(redact_keys({**cfg.prompt.params, **p.extra_body}), sort_keys=True),
        "estimated_prompt_tokens": item.estimated_prompt_tokens,
        "source_key": item.source_key or item.request_key, "segment_count": item.segment_count,
        "request_id": item.request_key, "pack_size": 1, "pack_index": 0,
        **estimate_columns(item.estimate, p.prices),
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


def answer_fields(c: Answer, prices: Prices | None = None, estimate: Estimate | None = None) -> dict:
    """The columns an answer fills: its text, JSON, finish reason, id, usage (by modality) and cost."""
    return {"output_text": c.text, "output_json": _json_or_none(c.text), "finish_reason": c.finish_reason,
            "response_id": c.response_id, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.total_tokens,
            **usage_columns(c.prompt_tokens, c.completion_tokens, getattr(c, "usage", None), prices, estimate)}


def result_row(item: WorkItem, cfg: RunConfig, run_id: str, result: Outcome, estimate: Estimate | None = None) -> dict:
    """An item's row; `estimate` is its request's (a pack's), default the item's own."""
    estimate = estimate or item.estimate
    if result.error is not None:
        row = error_row(item, cfg, run_id, result.error, result.attempts, result.latency_ms)
        if result.completion is not None:  # answered but unusable (invalid_output): keep the answer and its usage
            row.update(answer_fields(result.completion, cfg.provider.prices, estimate))
        return row
    assert result.completion is not None, "an outcome without an error carries its answer"
    return {**base_row(item, cfg, run_id), "status": "ok",
            **answer_fields(result.completion, cfg.provider.prices, estimate),
            "attempts": result.attempts, "latency_ms": result.latency_ms, "http_status": 200}


USAGE_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens", "prompt_text_tokens", "prompt_video_tokens",
                 "prompt_audio_tokens", "cached_prompt_tokens", "reasoning_tokens", "usage_json", "gateway_cost",
                 "computed_cost", "cost")


def pack_rows(pack: list[WorkItem], cfg: RunConfig, run_id: str, result: Outcome,
              prepared: list[Prepared]) -> list[dict]:
    """One row per video of a request; a packed request's usage is on its first row only."""
    request_id = pack_id(pack)
    rows = []
    estimate = pack_estimate(pack)
    for i, (item, prep) in enumerate(zip(pack, prepared, strict=True)):  # one Prepared per item, in order
        row = result_row(item, cfg, run_id, result, estimate if i == 0 else None)
        row.update(media_ops=prep.ops, request_id=request_id, pack_size=len(pack), pack_index=i)
        if i > 0 and len(pack) > 1:
            row.update(dict.fromkeys(USAGE_COLUMNS))
            row["estimated_prompt_tokens"] = (item.estimated_prompt_tokens or 0) - prompt_text_tokens(cfg)
            if item.estimate is not None:
                row.update(estimate_columns(replace(item.estimate, text=0, output=0), cfg.provider.prices))
        rows.append(row)
    return rows


def empty_row(item: WorkItem, cfg: RunConfig, run_id: str) -> dict:
    """The row of a zero-byte object: skipped (never sent), error_type `empty`, so the ledger lists every object."""
    err = EmptyError(f"{item.obj.uri}: zero-byte object: nothing to send")
    return {**error_row(item, cfg, run_id, err), "status": "skipped"}
