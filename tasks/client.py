"""One async HTTP client per provider: credentials, pacing, retries, and errors mapped at one boundary."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable

import httpx
from tenacity import (AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt,
                      stop_after_delay, wait_exponential_jitter)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from .body import RequestBody
from .config import ProviderConfig
from .dialects import Completion, endpoint, parse_completion
from .errors import (AuthError, ConfigError, MalformedResponseError, NotAttemptedError, ProviderError,
                     QuotaExhaustedError, RateLimitedError, RetryableError, ServerError, SourceError,
                     TransportError, error_for_status, redact)
from .limiter import Limiter, Ticket

log = logging.getLogger(__name__)


class Credentials:
    """A bearer token from an environment variable, a fixed value, or a command (cached, refreshed)."""

    def __init__(self, provider: ProviderConfig, token: str | None = None,
                 run: Callable = subprocess.run, clock: Callable[[], float] = time.monotonic):
        self._provider, self._token, self._run, self._clock = provider, token, run, clock
        self._expires = float("inf") if token else float("-inf")

    def header(self) -> dict[str, str]:
        """The Authorization header, running the token command when the cached token has expired."""
        p = self._provider
        if self._token is None and p.api_key_env:
            value = os.environ.get(p.api_key_env)
            if not value:
                raise ConfigError(f"provider.api_key_env: environment variable {p.api_key_env} is not set")
            self._token, self._expires = value, float("inf")
        if p.token_command and self._clock() >= self._expires:
            self._token = self._run_command(p.token_command)
            self._expires = self._clock() + p.token_ttl_s
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def refresh(self) -> bool:
        """Forget a command's token so the next header runs it again; False when nothing can refresh."""
        if not self._provider.token_command:
            return False
        self._expires = float("-inf")
        return True

    def _run_command(self, command: str) -> str:
        try:
            done = self._run(shlex.split(command), capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ConfigError(f"provider.token_command {command.split()[0]!r} could not run: {e}") from None
        token = (done.stdout or "").strip()
        if done.returncode != 0 or not token:
            raise ConfigError(f"provider.token_command {command.split()[0]!r} exited {done.returncode} "
                              f"without a token: {redact((done.stderr or '').strip(), 200)}")
        return token


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
    return any(isinstance((err or {}).get(f), str) and err[f] in codes for f in ("code", "type"))


def classify(response: httpx.Response, quota_codes: list[str]) -> ProviderError:
    """An error answer as its class in the tree: by status and the body's structured fields, never its text."""
    err = error_object(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if retry_after is None:
        retry_after = retry_delay(err)
    return error_for_status(response.status_code, redact(_error_message(response)), retry_after,
                            quota_exhausted=is_quota_exhausted(err, quota_codes))


class wait_retry_after(wait_base):
    """Wait what the provider's Retry-After (or the body's retry delay) said, else the fallback strategy."""

    def __init__(self, fallback: wait_base, cap: float = 600.0):
        self.fallback, self.cap = fallback, cap

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return min(exc.retry_after, self.cap)
        return self.fallback(retry_state)


class RetryBudget:
    """Retries the whole run may spend: `minimum` plus `ratio` per first attempt so far."""

    def __init__(self, ratio: float = 0.2, minimum: int = 50):
        self.ratio, self.minimum = ratio, minimum
        self.first_attempts = self.retries = self.refused = 0

    def first(self) -> None:
        self.first_attempts += 1

    def spend(self) -> bool:
        """Take one retry; False (and counted as refused) when none is left."""
        if self.retries < self.minimum + self.ratio * self.first_attempts:
            self.retries += 1
            return True
        self.refused += 1
        return False


class stop_when_budget_spent(stop_base):
    """Stop when the run's retry budget is spent; put it last in a `|` so only a real retry spends one."""

    def __init__(self, budget: RetryBudget, on_refused: Callable[[], None] | None = None):
        self.budget, self.on_refused = budget, on_refused

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.budget.spend():
            return False
        if self.on_refused:
            self.on_refused()
        return True


class CircuitBreaker:
    """Opens for the rest of the run after `failures` failed attempts in a row spanning `window_s` seconds.

    Failures are 5xx, transport and malformed answers; 429s and 4xx answers neither count nor reset
    the streak, an ok answer resets it. `trip` opens it at once (an exhausted quota).
    """

    def __init__(self, failures: int | None = 20, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.failures, self.window_s, self._clock = failures, window_s, clock
        self.streak, self.reason = 0, None
        self._since = None

    @property
    def open(self) -> bool:
        return self.reason is not None

    def success(self) -> None:
        self.streak, self._since = 0, None

    def failure(self, err: ProviderError) -> None:
        now = self._clock()
        if self._since is None:
            self._since = now
        self.streak += 1
        if self.failures and not self.open and self.streak >= self.failures and now - self._since >= self.window_s:
            self.trip(f"{self.streak} failed attempts in a row over {now - self._since:.0f} s "
                      f"(last: {type(err).__name__}: {redact(str(err), 160)})")

    def trip(self, reason: str) -> None:
        if not self.open:
            self.reason = reason
            log.warning("circuit breaker open: %s; the rest of the run is recorded as not attempted", reason)


def retry_policy(p: ProviderConfig, sleep: Callable[[float], Awaitable[None]], budget: RetryBudget | None = None,
                 on_refused: Callable[[], None] | None = None) -> AsyncRetrying:
    """The one retry policy: retryable errors only, bounded attempts and time and by the run's budget,
    Retry-After first."""
    stop = stop_after_attempt(p.max_attempts) | stop_after_delay(p.max_retry_time_s)
    if budget is not None:
        stop = stop | stop_when_budget_spent(budget, on_refused)
    return AsyncRetrying(
        stop=stop,
        wait=wait_retry_after(wait_exponential_jitter(initial=p.backoff_initial_s, max=p.backoff_max_s)),
        retry=retry_if_exception_type(RetryableError),
        sleep=sleep,
        reraise=True,
    )


@dataclass
class CallResult:
    """The outcome of one item's request after all its attempts."""

    completion: Completion | None
    error: ProviderError | None
    attempts: int
    latency_ms: int | None


@dataclass
class Exchange:
    """The successful answer to ProviderClient.request, with its attempts and latency."""

    response: httpx.Response
    attempts: int
    latency_ms: int


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


class ProviderClient:
    """Sends chat/completions requests for one provider through one httpx.AsyncClient."""

    def __init__(self, provider: ProviderConfig, credentials: Credentials, base_url: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic, limiter: Limiter | None = None,
                 retry_budget: RetryBudget | None = None, breaker: CircuitBreaker | None = None, permits=None):
        self.provider, self.credentials = provider, credentials
        self.permits = permits  # tasks.quota.Permits: the shared limit across workers, awaited before each request
        self.url = endpoint(provider.dialect, base_url or provider.base_url, provider.project, provider.location)
        lim = provider.limits
        self.limiter = limiter or Limiter(lim.rpm, lim.tpm, lim.concurrency, window=lim.window, margin_s=lim.margin_s,
                                          ramp_s=lim.ramp_s, clock=clock, sleep=sleep)
        self.retry_budget = retry_budget or RetryBudget(provider.retry_budget_ratio, provider.retry_budget_min)
        self.breaker = breaker or CircuitBreaker(provider.breaker_failures, provider.breaker_window_s, clock)
        self._sleep, self._clock = sleep, clock
        timeout = httpx.Timeout(provider.timeout_s, connect=provider.connect_timeout_s)
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout,
                                       limits=httpx.Limits(max_connections=lim.concurrency * 2 + 4))

    async def __aenter__(self) -> "ProviderClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self._http.aclose()
        lim = self.limiter
        if lim.pauses or lim.header_holds:
            log.info("pacing: %d pause(s) for a 429's Retry-After; the provider's x-ratelimit headers held the pace "
                     "%d time(s) (its account showed more use than this run's own)", lim.pauses, lim.header_holds)

    async def send(self, body: dict | RequestBody, estimated_tokens: int, request_key: str) -> CallResult:
        """Send one request with retries; never raises a ProviderError, returns it in the result.

        Once the circuit breaker is open nothing more is sent: an item not sent yet, or cut short
        between attempts, ends as NotAttemptedError (the next run sends it again).
        """
        s = _Send()
        content = body if isinstance(body, RequestBody) else json.dumps(body, separators=(",", ":")).encode()
        try:
            async for attempt in retry_policy(self.provider, self._sleep, self.retry_budget, s.budget_refused):
                with attempt:
                    completion, latency = await self._attempt(content, estimated_tokens, request_key, s)
            return CallResult(completion, None, s.attempts, latency)
        except NotAttemptedError as e:
            if s.last_error is not None:
                last = s.last_error
                e = NotAttemptedError(f"{e} (its last attempt: {type(last).__name__}: {last})", last.http_status)
            return CallResult(None, e, s.attempts, s.latency)
        except SourceError as e:  # an inline video that vanished or changed while its body streamed
            return CallResult(None, e, s.attempts, s.latency)
        except ProviderError as e:
            if s.out_of_budget:
                e = type(e)(f"{e} (not retried: the run's retry budget is spent)", e.http_status, e.retry_after)
            return CallResult(None, e, s.attempts, s.latency)

    async def request(self, method: str, url: str, json_body: dict | None = None, *, request_key: str | None = None,
                      auth: bool = True, paced: bool = True) -> Exchange:
        """Any request (a JSON call, a poll, a download) with send's pacing, retries and error mapping.

        Raises the ProviderError of the last attempt. `auth=False` sends no credentials (other hosts);
        `paced=False` bypasses the limiter (requests the provider's limits do not count).
        """
        attempts, latency, refreshed = 0, 0, [False]
        content = None if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        async for attempt in retry_policy(self.provider, self._sleep):
            with attempt:
                attempts += 1
                response, latency = await self._exchange(method, url, content, 0, request_key, refreshed, auth, paced)
        return Exchange(response, attempts, latency)

    async def _exchange(self, method: str, url: str, content: bytes | None, estimated: int, request_key: str | None,
                        refreshed: list[bool], auth: bool = True, paced: bool = True) -> tuple[httpx.Response, int]:
        """One HTTP exchange; an error status is raised as its class in the tree."""
        response, latency, _ = await self._exchange_once(method, url, content, estimated, request_key, refreshed,
                                                         auth, paced)
        return response, latency

    async def _exchange_once(self, method: str, url: str, content: bytes | RequestBody | None, estimated: int,
                             request_key: str | None, refreshed: list[bool], auth: bool = True, paced: bool = True,
                             before_send: Callable[[], None] | None = None,
                             ) -> tuple[httpx.Response, int, Ticket | None]:
        """The boundary: one HTTP exchange, every failure raised as its class in the tree."""
        async with self.limiter.slot(estimated) if paced else nullcontext() as ticket:
            if paced and self.permits is not None:
                await self.permits.take(estimated)
                ticket.start = max(ticket.start, self._clock())  # the window counts the request from its real start
            if before_send:
                before_send()
            headers = {"Content-Type": "application/json"} if content is not None else {}
            if request_key:
                headers["X-Request-Key"] = request_key
            if auth:
                headers.update(self.credentials.header())
            if isinstance(content, RequestBody):  # streamed from storage: a fresh stream per attempt
                headers["Content-Length"] = str(len(content))
            started = self._clock()
            try:
                response = await self._http.request(
                    method, url, content=content.stream() if isinstance(content, RequestBody) else content,
                    headers=headers)
            except httpx.TimeoutException as e:
                raise TransportError(f"timed out ({type(e).__name__}) after {self._clock() - started:.1f} s") from None
            except httpx.DecodingError as e:
                raise MalformedResponseError(f"the answer could not be decoded: {type(e).__name__}", None) from None
            except httpx.RequestError as e:
                raise TransportError(f"connection failed: {type(e).__name__}: {redact(str(e), 200)}") from None
            latency = int((self._clock() - started) * 1000)
        if ticket is not None and response.status_code in (200, 429):
            for kind, (remaining, reset_s, limit) in rate_limit_headers(response.headers).items():
                self.limiter.observe(ticket, kind, remaining, reset_s, limit)
        if response.status_code >= 400:
            err = classify(response, self.provider.quota_error_codes)
            if isinstance(err, RateLimitedError) and paced:
                self.limiter.pause(err.retry_after if err.retry_after is not None else self.provider.backoff_initial_s)
            if isinstance(err, AuthError) and auth and not refreshed[0] and self.credentials.refresh():
                refreshed[0] = True  # a command's token may have expired early: one fresh try
                raise RetryableError(f"{err} (token refreshed, trying again)", err.http_status)
            raise err
        return response, latency, ticket

    def _check_breaker(self) -> None:
        if self.breaker.open:
            raise NotAttemptedError(f"not sent: the run stopped sending after {self.breaker.reason}; "
                                    "the next run sends it")

    async def _attempt(self, content: bytes | RequestBody, estimated: int, request_key: str,
                       s: "_Send") -> tuple[Completion, int]:
        """One attempt of `send`, its outcome told to the budget and the breaker."""
        self._check_breaker()

        def starting() -> None:
            self._check_breaker()
            s.attempts += 1
            if s.attempts == 1:
                self.retry_budget.first()

        try:
            response, latency, ticket = await self._exchange_once("POST", self.url, content, estimated, request_key,
                                                                  s.refreshed, before_send=starting)
            s.latency = latency
            try:
                completion = parse_completion(response.json())
            except ValueError:
                raise MalformedResponseError("the answer is not valid JSON", response.status_code) from None
        except NotAttemptedError:
            raise
        except QuotaExhaustedError as e:
            self.breaker.trip(f"the provider's quota is exhausted: {redact(str(e), 160)}")
            s.last_error = e
            raise
        except (ServerError, TransportError, MalformedResponseError) as e:
            self.breaker.failure(e)
            s.last_error = e
            raise
        except ProviderError as e:
            s.last_error = e
            raise
        self.breaker.success()
        if ticket is not None:
            self.limiter.correct(ticket, completion.prompt_tokens)
        return completion, latency


class _Send:
    """What one `send` has done so far."""

    def __init__(self):
        self.attempts, self.latency, self.refreshed = 0, None, [False]
        self.last_error: ProviderError | None = None
        self.out_of_budget = False

    def budget_refused(self) -> None:
        self.out_of_budget = True
