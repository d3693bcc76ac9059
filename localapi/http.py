"""What every localapi route shares: replies, bearer-token auth, 429s with Retry-After, and injected faults."""

from __future__ import annotations

import hmac
import json
import math
import time
from dataclasses import dataclass, field
from email.utils import formatdate

from localapi.config import LocalAPIConfig
from localapi.dialects import ApiError

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
FAULTS = {  # kind -> (status, message, error type, code)
    "500": (500, "internal server error", "server_error", "internal_error"),
    "502": (502, "bad gateway", "server_error", "bad_gateway"),
    "503": (503, "service unavailable", "server_error", "service_unavailable"),
    "504": (504, "gateway timeout", "server_error", "gateway_timeout"),
    "400": (400, "invalid request", "invalid_request_error", "injected_fault"),
    "401": (401, "invalid or expired token", "authentication_error", "invalid_api_key"),
}
HTML_502 = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
            b"<hr><center>localapi</center></body></html>")


@dataclass
class Reply:
    """What the handler writes back; `drop` closes the socket without an answer."""

    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    content_type: str = "application/json"
    drop: bool = False

    @classmethod
    def json(cls, status: int, obj, headers: dict | None = None) -> Reply:
        return cls(status, json.dumps(obj).encode(), headers or {})

    @classmethod
    def error(cls, exc: ApiError) -> Reply:
        return cls.json(exc.status, exc.body(), exc.headers)


def authorize(headers, cfg: LocalAPIConfig) -> None:
    scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing bearer token: send the header 'Authorization: Bearer <token>'",
                       type="authentication_error", code="missing_api_key")
    if cfg.api_key is not None and not hmac.compare_digest(token.encode(), cfg.api_key.encode()):
        message = f"Incorrect API key provided: {token}." if cfg.echo_key else \
            "the bearer token does not match the api key this localapi was started with"
        raise ApiError(401, message, type="authentication_error", code="invalid_api_key")


def rate_limited(wait: float, limit: str, cfg: LocalAPIConfig, extra_headers: dict | None = None) -> ApiError:
    seconds = max(1, math.ceil(wait))
    value = formatdate(math.ceil(time.time() + seconds), usegmt=True) if cfg.retry_after_format == "http-date" \
        else str(seconds)
    headers = {"Retry-After": value} if cfg.retry_after_in in ("header", "both") else {}
    details = [{"@type": RETRY_INFO, "retryDelay": f"{seconds}s"}] if cfg.retry_after_in in ("body", "both") else None
    return ApiError(429, f"rate limit reached: {limit}; retry after {seconds} s", type="rate_limit_error",
                    code="rate_limited", headers={**(extra_headers or {}), **headers}, details=details)


def fault_reply(fault: str, cfg: LocalAPIConfig) -> Reply | None:
    """The answer an injected fault gives, or None when the request is answered normally."""
    if fault == "drop":
        return Reply(drop=True)
    if fault == "502html":
        return Reply(502, HTML_502, content_type="text/html")
    if fault == "429":
        return Reply.error(rate_limited(cfg.retry_after_s, "localapi injected fault (429)", cfg))
    if fault in FAULTS:
        status, message, kind, code = FAULTS[fault]
        return Reply.error(ApiError(status, f"localapi injected fault ({fault}): {message}", type=kind, code=code))
    return None


def duration_text(seconds: float) -> str:
    """A reset time as OpenAI writes it: "59.87s", "120ms"."""
    seconds = max(0.0, seconds)
    return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
