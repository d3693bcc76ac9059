"""One async HTTP client per provider: credentials, pacing, retries, and errors mapped at one boundary."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from decimal import Decimal

import httpx

from tasks.call.auth import Credentials
from tasks.call.budget import Spend
from tasks.call.pacing import Limiter, Ticket
from tasks.call.responses import Completion, classify, parse_completion, rate_limit_headers
from tasks.call.retry import CircuitBreaker, RetryBudget, retry_policy
from tasks.config.connection import Connection
from tasks.config.run import ProviderConfig
from tasks.errors import (
    AuthError,
    BudgetError,
    MalformedResponseError,
    NotAttemptedError,
    ProviderError,
    QuotaExhaustedError,
    RateLimitedError,
    RetryableError,
    ServerError,
    SourceError,
    TransportError,
    VidbatchError,
    redact,
)
from tasks.media.tokens import Estimate
from tasks.prepare.body import RequestBody

log = logging.getLogger(__name__)


@dataclass
class CallResult:
    """The outcome of one item's request after all its attempts."""

    completion: Completion | None
    error: VidbatchError | None  # a ProviderError, or a SourceError: an inline video that vanished mid-stream
    attempts: int
    latency_ms: int | None


@dataclass
class Exchange:
    """The successful answer to ProviderClient.request, with its attempts and latency."""

    response: httpx.Response
    attempts: int
    latency_ms: int


class ProviderClient:
    """Requests to one provider Connection through one httpx.AsyncClient; `send` posts chat/completions."""

    def __init__(self, provider: Connection, credentials: Credentials, base_url: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic, limiter: Limiter | None = None,
                 retry_budget: RetryBudget | None = None, breaker: CircuitBreaker | None = None, permits=None,
                 endpoint: str | None = None, spend: Spend | None = None):
        self.provider, self.credentials = provider, credentials
        self.permits = permits  # shared_pacing.Permits: the rate shared across workers, awaited before each request
        self.spend = spend  # the run's budget: each send reserves its worst case first (tasks/call/budget.py)
        self.base_url = base_url or provider.base_url  # an embedded localapi's, else the configured one
        if endpoint is None and isinstance(provider, ProviderConfig):
            endpoint = provider.endpoint(self.base_url)
        self.url: str | None = endpoint  # where `send` posts (the dialect's URL); None: a client for `request` only
        lim = provider.limits
        self.limiter = limiter or Limiter(lim.rpm, lim.tpm, lim.concurrency, window=lim.window, margin_s=lim.margin_s,
                                          ramp_s=lim.ramp_s, clock=clock, sleep=sleep)
        self.retry_budget = retry_budget or RetryBudget(provider.retry_budget_ratio, provider.retry_budget_min)
        self.breaker = breaker or CircuitBreaker(provider.breaker_failures, provider.breaker_window_s, clock)
        self._sleep, self._clock = sleep, clock
        timeout = httpx.Timeout(provider.timeout_s, connect=provider.connect_timeout_s)
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout,
                                       limits=httpx.Limits(max_connections=lim.concurrency * 2 + 4))

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self._http.aclose()
        lim = self.limiter
        if lim.pauses or lim.header_holds:
            log.info("pacing: %d pause(s) for a 429's Retry-After; the provider's x-ratelimit headers held the pace "
                     "%d time(s) (its account showed more use than this run's own)", lim.pauses, lim.header_holds)

    async def send(self, body: dict | RequestBody, estimated_tokens: int, request_key: str,
                   estimate: Estimate | None = None) -> CallResult:
        """Send one request with retries; never raises a ProviderError, returns it in the result.

        Once the circuit breaker is open nothing more is sent: an item not sent yet, or cut short
        between attempts, ends as NotAttemptedError (the next run sends it again). With a budget the
        request first reserves its worst case (`estimate` by modality; default: `estimated_tokens` of text)
        and ends as BudgetError when that no longer fits.
        """
        if self.spend is None:
            return await self._send(body, estimated_tokens, request_key)
        est = estimate or Estimate(text=estimated_tokens)
        hold = await self.spend.reserve(self.spend.reservation(est))
        if hold is None:
            return CallResult(None, BudgetError(self.spend.stopped or "not sent: the budget is spent"), 0, None)
        result = await self._send(body, estimated_tokens, request_key)
        c, err = result.completion, result.error
        if c is not None:
            cost = self.spend.cost_of(c.prompt_tokens, c.completion_tokens, c.usage, est)
        elif result.attempts == 0 or (err is not None and getattr(err, "http_status", None) is not None
                                      and not isinstance(err, MalformedResponseError)):
            cost = Decimal(0)  # never sent, or refused with an error status: not billed
        else:
            cost = None  # a timeout or a dropped answer: the provider may have done the work; keep the worst case
        await self.spend.settle(hold, cost)
        return result

    async def _send(self, body: dict | RequestBody, estimated_tokens: int, request_key: str) -> CallResult:
        url = self.url
        if url is None:
            raise TypeError(f"provider {self.provider.name!r} has no chat/completions endpoint: give the client an "
                            "endpoint, or a ProviderConfig whose dialect names one")
        s = _Send()
        content = body if isinstance(body, RequestBody) else json.dumps(body, separators=(",", ":")).encode()
        try:
            async for attempt in retry_policy(self.provider, self._sleep, self.retry_budget, s.budget_refused):
                with attempt:
                    completion, latency = await self._attempt(url, content, estimated_tokens, request_key, s)
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
        held = None  # the shared slots of this request, given back HOLD_S after its answer
        async with self.limiter.slot(estimated) if paced else nullcontext() as ticket:
            if paced and self.permits is not None:
                held = await self.permits.take(estimated)
                assert ticket is not None, "a paced exchange holds a limiter ticket"
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
            finally:
                if held is not None:
                    self.permits.finish(held)
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

    async def _attempt(self, url: str, content: bytes | RequestBody, estimated: int, request_key: str,
                       s: _Send) -> tuple[Completion, int]:
        """One attempt of `send`, its outcome told to the budget and the breaker."""
        self._check_breaker()

        def starting() -> None:
            self._check_breaker()
            s.attempts += 1
            if s.attempts == 1:
                self.retry_budget.first()

        try:
            response, latency, ticket = await self._exchange_once("POST", url, content, estimated, request_key,
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
        except AuthError as e:  # a wrong or expired key fails every request alike: stop at the first
            self.breaker.trip(f"the provider refused the credentials (HTTP {e.http_status}): {redact(str(e), 160)}")
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
            if self.permits is not None:
                self.permits.correct(estimated, completion.prompt_tokens)
        return completion, latency


class _Send:
    """What one `send` has done so far."""

    def __init__(self):
        self.attempts, self.latency, self.refreshed = 0, None, [False]
        self.last_error: ProviderError | None = None
        self.out_of_budget = False

    def budget_refused(self) -> None:
        self.out_of_budget = True
