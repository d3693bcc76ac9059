"""The one retry policy: tenacity strategies, a retry budget and a circuit breaker."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from tasks.config.connection import Connection
from tasks.errors import ProviderError, RetryableError, redact

log = logging.getLogger("tasks.call.client")  # the client's own log: retries are part of its story


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
        self.streak = 0
        self.reason: str | None = None
        self._since: float | None = None

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


def retry_policy(p: Connection, sleep: Callable[[float], Awaitable[None]], budget: RetryBudget | None = None,
                 on_refused: Callable[[], None] | None = None) -> AsyncRetrying:
    """The one retry policy: retryable errors only, bounded by attempts, time and run budget; Retry-After first."""
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
