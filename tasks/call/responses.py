"""Read provider answers: completions, error bodies, Retry-After and rate-limit headers, mapped to the error tree."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tasks.errors import MalformedResponseError, ProviderError, error_for_status, redact


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?")


def parse_duration(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a rate-limit reset value: seconds ("12", "0.5"), a Go duration ("1m30s", "120ms", "37s")
    or, for a number above 1e9, a Unix time."""
    if not value:
        return None
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        m = _DURATION.fullmatch(value)
        if not m or not any(m.groups()):
            return None
        h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
        return h * 3600 + mi * 60 + s + ms / 1000
    if number > 1e9:
        return max(0.0, number - (now if now is not None else time.time()))
    return max(0.0, number)


def rate_limit_headers(headers: httpx.Headers | dict) -> dict[str, tuple[float, float, float | None]]:
    """{"requests"|"tokens": (remaining, reset_s, limit or None)} from x-ratelimit-* headers, when sent.

    Reads the OpenAI names (x-ratelimit-remaining-requests, -reset-requests, -limit-requests and the
    -tokens ones) and the generic x-ratelimit-remaining / -reset / -limit, taken as requests.
    """
    headers = httpx.Headers(headers)
    seen: dict[str, tuple[float, float, float | None]] = {}
    for kind, suffix in (("requests", "-requests"), ("tokens", "-tokens"), ("requests", "")):
        if kind in seen:
            continue
        try:
            remaining = float(headers.get(f"x-ratelimit-remaining{suffix}", ""))
        except ValueError:
            continue
        reset = parse_duration(headers.get(f"x-ratelimit-reset{suffix}"))
        if reset is None:
            continue
        try:
            limit = float(headers.get(f"x-ratelimit-limit{suffix}", "")) or None
        except ValueError:
            limit = None
        seen[kind] = (remaining, reset, limit)
    return seen


RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def error_object(response: httpx.Response) -> dict | None:
    """The `error` object of a JSON error body (also Google's list-wrapped form), or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if not isinstance(body, dict):
        return None
    err = body.get("error", body)
    return err if isinstance(err, dict) else None


def retry_delay(err: dict | None) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail of an error body (`"retryDelay": "37s"`), or None."""
    for detail in (err or {}).get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == RETRY_INFO:
            return parse_duration(str(detail.get("retryDelay", "")))
    return None


def is_quota_exhausted(err: dict | None, codes: list[str]) -> bool:
    """Whether the error body's `code` or `type` field is one of the provider's quota codes."""
    body = err or {}
    return any(isinstance(body.get(f), str) and body[f] in codes for f in ("code", "type"))


def classify(response: httpx.Response, quota_codes: list[str]) -> ProviderError:
    """An error answer as its class in the tree: by status and the body's structured fields, never its text."""
    err = error_object(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if retry_after is None:
        retry_after = retry_delay(err)
    return error_for_status(response.status_code, redact(_error_message(response)), retry_after,
                            quota_exhausted=is_quota_exhausted(err, quota_codes))


_TAGS = re.compile(r"<[^>]+>")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message") if isinstance(err, dict) else None
        if msg:
            return str(msg)
        return json.dumps(body)[:300]
    except (ValueError, AttributeError):
        text = " ".join(_TAGS.sub(" ", response.text).split())
        return text[:300] or response.reason_phrase


@dataclass(frozen=True)
class Completion:
    """The parts of a chat.completion answer the ledger keeps."""

    text: str
    finish_reason: str | None
    response_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    usage: dict | None = None  # the usage object as sent (details by modality, a gateway's cost)


def parse_completion(body: Any) -> Completion:
    """Read a chat.completion body; MalformedResponseError when it is not one."""
    try:
        choice = body["choices"][0]
        content = choice["message"]["content"]
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise TypeError("message.content is not text")
        usage = body.get("usage") or {}
        return Completion(text=content, finish_reason=choice.get("finish_reason"), response_id=body.get("id"),
                          prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
                          total_tokens=usage.get("total_tokens"), usage=usage if isinstance(usage, dict) else None)
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise MalformedResponseError(f"the answer is not a chat.completion: {type(e).__name__}: {e}", 200) from None
