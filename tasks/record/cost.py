"""Money in the ledger: the usage a provider reports by modality, and the estimated and actual cost of a row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tasks.config.prices import Prices, TokenCounts
from tasks.media.tokens import Estimate


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        d = Decimal(str(value))
    except ArithmeticError:
        return None
    return d if d.is_finite() and d >= 0 else None


@dataclass(frozen=True)
class Reported:
    """What an answer's `usage` says beyond the three totals (None: not reported)."""

    text: int | None = None       # prompt_tokens_details.text_tokens
    video: int | None = None      # prompt_tokens_details.video_tokens (+ image_tokens)
    audio: int | None = None      # prompt_tokens_details.audio_tokens
    cached: int | None = None     # prompt_tokens_details.cached_tokens
    reasoning: int | None = None  # completion_tokens_details.reasoning_tokens
    cost: Decimal | None = None   # a gateway's own figure: usage.cost (OpenRouter, LiteLLM proxies)

    @property
    def by_modality(self) -> bool:
        return any(v is not None for v in (self.text, self.video, self.audio))


def reported(usage: dict | None) -> Reported:
    """Read OpenAI-style usage details (and a gateway's `cost`) from an answer's usage object."""
    if not isinstance(usage, dict):
        return Reported()
    prompt = usage.get("prompt_tokens_details")
    prompt = prompt if isinstance(prompt, dict) else {}
    completion = usage.get("completion_tokens_details")
    completion = completion if isinstance(completion, dict) else {}
    video, image = _int(prompt.get("video_tokens")), _int(prompt.get("image_tokens"))
    return Reported(text=_int(prompt.get("text_tokens")),
                    video=None if video is None and image is None else (video or 0) + (image or 0),
                    audio=_int(prompt.get("audio_tokens")), cached=_int(prompt.get("cached_tokens")),
                    reasoning=_int(completion.get("reasoning_tokens")), cost=_number(usage.get("cost")))


def estimate_counts(est: Estimate) -> TokenCounts:
    """An estimate as billed: frames and timestamps are video input, then audio, text and the expected output."""
    return TokenCounts(text=est.text, video=est.frames + est.timestamps, audio=est.audio, output=est.output)


def _shares(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights`, in whole tokens (largest remainder), summing to `total`."""
    whole = sum(weights)
    if whole <= 0:
        return [total] + [0] * (len(weights) - 1)
    exact = [total * w / whole for w in weights]
    out = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - out[i], reverse=True)[: total - sum(out)]:
        out[i] += 1
    return out


def actual_counts(prompt_tokens: int | None, completion_tokens: int | None, rep: Reported,
                  est: Estimate | None) -> TokenCounts | None:
    """The reported tokens as billed. Cached tokens are billed as cached; the rest by the reported modalities,
    or, when the provider reports no split, in the proportions of the estimate (text, video, audio)."""
    if prompt_tokens is None:
        return None
    cached = min(rep.cached or 0, prompt_tokens)
    rest = prompt_tokens - cached
    if rep.by_modality or est is None:
        audio = min(rep.audio or 0, rest)
        video = min(rep.video or 0, rest - audio)
        text = rest - audio - video
    else:
        text, video, audio = _shares(rest, [est.text, est.frames + est.timestamps, est.audio])
    return TokenCounts(text=text, video=video, audio=audio, cached=cached, output=completion_tokens or 0)


def as_float(value: Decimal | None) -> float | None:
    """A Decimal amount as the nearest float64 (the ledger's cost columns); exact amounts stay exact to 1e-15."""
    return None if value is None else float(value)


def estimated_cost(prices: Prices | None, est: Estimate | None) -> Decimal | None:
    return None if prices is None or est is None else prices.cost(estimate_counts(est))


def usage_columns(prompt_tokens: int | None, completion_tokens: int | None, usage: dict | None,
                  prices: Prices | None, est: Estimate | None) -> dict:
    """The ledger's usage-by-modality and cost columns for one answer.

    `computed_cost` is the reported usage at the profile's prices; `gateway_cost` the gateway's own figure;
    `cost` is the gateway's figure when it sent one, else the computed one.
    """
    rep = reported(usage)
    counts = actual_counts(prompt_tokens, completion_tokens, rep, est)
    computed = prices.cost(counts) if prices is not None and counts is not None else None
    cost = rep.cost if rep.cost is not None else computed
    return {"prompt_text_tokens": rep.text, "prompt_video_tokens": rep.video, "prompt_audio_tokens": rep.audio,
            "cached_prompt_tokens": rep.cached, "reasoning_tokens": rep.reasoning,
            "usage_json": json.dumps(usage, sort_keys=True, separators=(",", ":")) if usage is not None else None,
            "gateway_cost": as_float(rep.cost), "computed_cost": as_float(computed), "cost": as_float(cost)}


def answer_cost(prompt_tokens: int | None, completion_tokens: int | None, usage: dict | None,
                prices: Prices | None, est: Estimate | None) -> Decimal | None:
    """What an answer cost, exactly: the gateway's figure when sent, else the reported usage at the prices."""
    rep = reported(usage)
    if rep.cost is not None:
        return rep.cost
    counts = actual_counts(prompt_tokens, completion_tokens, rep, est)
    return prices.cost(counts) if prices is not None and counts is not None else None


def estimate_columns(est: Estimate | None, prices: Prices | None) -> dict:
    """The estimate by modality and its cost (the prompt by the token rules plus the expected output)."""
    currency = prices.currency if prices is not None else None
    if est is None:
        return {"currency": currency}
    return {"estimated_frame_tokens": est.frames, "estimated_audio_tokens": est.audio,
            "estimated_timestamp_tokens": est.timestamps, "estimated_text_tokens": est.text,
            "estimated_output_tokens": est.output, "estimated_cost": as_float(estimated_cost(prices, est)),
            "currency": currency}
