"""One async HTTP client per provider: credentials, pacing, retries, and errors mapped at one boundary."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable

import httpx
from tenacity import (AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt,
                      stop_after_delay, wait_exponential_jitter)
from tenacity.wait import wait_base

from .config import ProviderConfig
from .dialects import Completion, endpoint, parse_completion
from .errors import (AuthError, ConfigError, MalformedResponseError, ProviderError, RateLimitedError,
                     RetryableError, TransportError, error_for_status, redact)
from .limiter import Limiter


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


class wait_retry_after(wait_base):
    """Wait what the provider's Retry-After said, else the fallback strategy."""

    def __init__(self, fallback: wait_base, cap: float = 600.0):
        self.fallback, self.cap = fallback, cap

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return min(exc.retry_after, self.cap)
        return self.fallback(retry_state)


def retry_policy(p: ProviderConfig, sleep: Callable[[float], Awaitable[None]]) -> AsyncRetrying:
    """The one retry policy: retryable errors only, bounded attempts and time, Retry-After first."""
    return AsyncRetrying(
        stop=stop_after_attempt(p.max_attempts) | stop_after_delay(p.max_retry_time_s),
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
                 clock: Callable[[], float] = time.monotonic, limiter: Limiter | None = None):
        self.provider, self.credentials = provider, credentials
        self.url = endpoint(provider.dialect, base_url or provider.base_url, provider.project, provider.location)
        lim = provider.limits
        self.limiter = limiter or Limiter(lim.rpm, lim.tpm, lim.concurrency, clock=clock, sleep=sleep)
        self._sleep, self._clock = sleep, clock
        timeout = httpx.Timeout(provider.timeout_s, connect=provider.connect_timeout_s)
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout,
                                       limits=httpx.Limits(max_connections=lim.concurrency * 2 + 4))

    async def __aenter__(self) -> "ProviderClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self._http.aclose()

    async def send(self, body: dict, estimated_tokens: int, request_key: str) -> CallResult:
        """Send one request with retries; never raises a ProviderError, returns it in the result."""
        attempts, latency, refreshed = 0, None, [False]
        content = json.dumps(body, separators=(",", ":")).encode()
        try:
            async for attempt in retry_policy(self.provider, self._sleep):
                with attempt:
                    attempts += 1
                    completion, latency = await self._attempt(content, estimated_tokens, request_key, refreshed)
            return CallResult(completion, None, attempts, latency)
        except ProviderError as e:
            return CallResult(None, e, attempts, latency)

    async def _attempt(self, content: bytes, estimated: int, request_key: str,
                       refreshed: list[bool]) -> tuple[Completion, int]:
        async with self.limiter.slot(estimated):
            headers = {"Content-Type": "application/json", "X-Request-Key": request_key,
                       **self.credentials.header()}
            started = self._clock()
            try:
                response = await self._http.post(self.url, content=content, headers=headers)
            except httpx.TimeoutException as e:
                raise TransportError(f"timed out ({type(e).__name__}) after {self._clock() - started:.1f} s") from None
            except httpx.TransportError as e:
                raise TransportError(f"connection failed: {type(e).__name__}: {redact(str(e), 200)}") from None
            latency = int((self._clock() - started) * 1000)
        if response.status_code >= 400:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            err = error_for_status(response.status_code, redact(_error_message(response)), retry_after)
            if isinstance(err, RateLimitedError):
                self.limiter.pause(retry_after if retry_after is not None else 1.0)
            if isinstance(err, AuthError) and not refreshed[0] and self.credentials.refresh():
                refreshed[0] = True  # a command's token may have expired early: one fresh try
                raise RetryableError(f"{err} (token refreshed, trying again)", err.http_status)
            raise err
        try:
            completion = parse_completion(response.json())
        except ValueError:
            raise MalformedResponseError("the answer is not valid JSON", response.status_code) from None
        if completion.prompt_tokens is not None:
            self.limiter.correct(estimated, completion.prompt_tokens)
        return completion, latency
