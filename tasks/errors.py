"""One small exception tree; `error_type` in the ledger is the class's `kind`.

    VidbatchError
    ├── ConfigError                 bad config file, key, type or missing credential (before any call)
    ├── SourceError                 listing or reading an object failed
    ├── MediaError                  a video could not be probed, decoded, cut or re-encoded
    │   ├── LimitError              it cannot be made to fit the provider's limits (or media.max_duration_s)
    │   └── EmptyError              a zero-byte object: recorded `skipped`, never sent
    └── ProviderError               a call to the provider failed; carries http_status and retry_after
        ├── RetryableError          may succeed if sent again
        │   ├── RateLimitedError    429
        │   ├── ServerError         5xx
        │   ├── TransportError      timeout, refused or dropped connection
        │   └── MalformedResponseError  a 200 whose body is not a chat completion
        ├── PermanentError          sending again cannot help
        │   ├── BadRequestError     400, 404, 413, 422
        │   ├── AuthError           401, 403
        │   └── QuotaExhaustedError the provider's (daily) quota is spent: the run stops sending
        ├── NotAttemptedError       not sent: the run's circuit breaker opened; the next run sends it
        │   └── BudgetError         not sent: it no longer fits the run's (or the day's) budget
        └── InvalidOutputError      answered, but not as the JSON schema asked, even after one repair request
"""

from __future__ import annotations

import re

from tasks.secrets import scrub


class VidbatchError(Exception):
    kind = "error"


class ConfigError(VidbatchError):
    kind = "config"


class SourceError(VidbatchError):
    kind = "source"


class MediaError(VidbatchError):
    kind = "media"


class LimitError(MediaError):
    kind = "limit"


class EmptyError(MediaError):
    """A zero-byte object: its ledger row says so (status `skipped`), so the ledger accounts for every object."""

    kind = "empty"


class ProviderError(VidbatchError):
    kind = "provider"

    def __init__(self, message: str, http_status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.http_status, self.retry_after = http_status, retry_after


class RetryableError(ProviderError):
    kind = "retryable"


class RateLimitedError(RetryableError):
    kind = "rate_limited"

    def __init__(self, message: str, http_status: int | None = 429, retry_after: float | None = None):
        super().__init__(message, http_status, retry_after)


class ServerError(RetryableError):
    kind = "server"


class TransportError(RetryableError):
    kind = "transport"


class MalformedResponseError(RetryableError):
    kind = "malformed_response"


class PermanentError(ProviderError):
    kind = "permanent"


class BadRequestError(PermanentError):
    kind = "bad_request"


class AuthError(PermanentError):
    kind = "auth"


class QuotaExhaustedError(PermanentError):
    kind = "quota_exhausted"


class NotAttemptedError(ProviderError):
    kind = "not_attempted"


class BudgetError(NotAttemptedError):
    """Not sent: its worst-case cost no longer fits the budget; the next run (or day, for per_day) sends it."""

    kind = "budget"


class InvalidOutputError(ProviderError):
    """The answer did not validate against the request's JSON schema; `--all-errors` sends it again."""

    kind = "invalid_output"


RERUN_KINDS = frozenset({NotAttemptedError.kind, BudgetError.kind, AuthError.kind, QuotaExhaustedError.kind})
"""Kinds the next run sends again, flags or not: the run stopped sending (breaker, budget, refused key, quota)."""


def error_for_status(status: int, message: str, retry_after: float | None = None,
                     quota_exhausted: bool = False) -> ProviderError:
    """Map an HTTP error status to its class in the tree; `quota_exhausted` comes from the error body's code."""
    if quota_exhausted and 400 <= status < 500:
        return QuotaExhaustedError(message, status)
    if status == 429:
        return RateLimitedError(message, status, retry_after)
    if status in (401, 403):
        return AuthError(message, status)
    if status >= 500 or status in (408, 425):
        return ServerError(message, status, retry_after)
    return BadRequestError(message, status)


_DATA_URL = re.compile(r"data:([\w/+.-]+);base64,[A-Za-z0-9+/=_-]{8,}")
_SIGNED = re.compile(r"(?i)\b(x-amz-signature|x-amz-credential|x-amz-security-token|signature|x-goog-signature|"
                     r"x-goog-credential|sig|token|access_token|api_key|key)=([^&\s\"'<>]+)")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")


def redact(text: str, limit: int = 500) -> str:
    """Strip held secrets (by value), base64 payloads, URL signatures and bearer tokens from a message; shorten it."""
    text = scrub(text)
    text = _DATA_URL.sub(r"data:\1;base64,<redacted>", text)
    text = _SIGNED.sub(lambda m: f"{m.group(1)}=<redacted>", text)
    text = _BEARER.sub("Bearer <redacted>", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
