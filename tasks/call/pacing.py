"""Pacing of requests/min, tokens/min and concurrency together, with an injectable clock and sleep.

A request starts once every bound allows it:

- smooth pacing (window "smooth", the default): a GCRA schedule per limit (a virtual "theoretical
  arrival time" pushed forward by each start's cost, 60/rpm s and tokens*60/tpm s). No burst: a run
  starts at full rate at once, and idle time (no request waiting) is not banked. When the window or
  the headers hold a waiting request back, the schedule goes on from where it would have started
  (at most one request's cost behind), so one held-back start does not slow every later one.
- the window: never more than rpm requests, or tpm tokens, started within any `60 + margin_s`
  seconds. With window "sliding" this is the only rate bound, so the first minute's allowance may
  be spent at once. The margin absorbs the time between our start and the provider's count; after
  a burst that time can be long (the provider queues what it counts), so with "sliding" a request
  leaves the window 60 s + margin after its answer came back, which is never before it was counted.
- a pause (a 429's Retry-After), after which pacing ramps from half to the full rate over `ramp_s`.
- the provider's own account, from its x-ratelimit-remaining/-reset/-limit headers (`observe`).

Tokens are charged by the estimate and corrected by the usage an answer reports (`correct`).
Starts are handed out one at a time in arrival order, so a pause reaches the very next request.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import islice

WINDOW_S = 60.0


RAMP_FROM = 0.5  # share of the full rate right after a pause


@dataclass(eq=False)
class Ticket:
    """One booked start: when, how many tokens it is charged, and the run's running totals with it."""

    start: float
    tokens: int
    requests_total: int
    tokens_total: int
    in_window: bool = True
    end: float | None = None  # when its answer (or failure) came back


@dataclass(frozen=True)
class Allowance:
    """What a provider's rate-limit headers said, as a refill from `base` at `rate` per second until `until`.

    `base` is the running total (requests or tokens booked) the provider still allowed when the observed
    request started at `anchor`; without a known limit the rate is 0 and nothing more goes before `until`.
    """

    anchor: float
    base: float
    rate: float
    until: float

    def earliest(self, total: float) -> float:
        """The earliest start for a request that brings the running total to `total`."""
        excess = total - self.base
        if excess <= 0:
            return float("-inf")
        if self.rate > 0:
            return min(self.anchor + excess / self.rate, self.until)
        return self.until


class Limiter:
    """One provider's pace: rpm, tpm and concurrency together, as the module docstring describes."""

    def __init__(self, rpm: int | None = None, tpm: int | None = None, concurrency: int | None = None,
                 window: str = "smooth", margin_s: float = 0.25, ramp_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        if window not in ("smooth", "sliding"):
            raise ValueError(f"window must be 'smooth' or 'sliding', got {window!r}")
        self.rpm, self.tpm, self.concurrency, self.window = rpm, tpm, concurrency, window
        self.span = WINDOW_S + margin_s
        self.ramp_s = ramp_s
        self._clock, self._sleep = clock, sleep
        self._tat_req = self._tat_tok = float("-inf")
        self._paused_until = self._ramp_from = float("-inf")
        self._last_start = float("-inf")
        self._log: deque[Ticket] = deque()  # starts within the window, oldest first
        self._log_tokens = 0
        self._requests_total = self._tokens_total = 0
        self._allowance: dict[str, Allowance] = {}
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None
        self.pauses = self.header_holds = 0  # 429 pauses taken; provider accounts that held the pace
        self._turn = asyncio.Lock()

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def rate_factor(self, at: float) -> float:
        """Share of the full rate allowed at `at`: RAMP_FROM right after a pause, 1 after `ramp_s`."""
        elapsed = at - self._ramp_from
        if self.ramp_s <= 0 or elapsed >= self.ramp_s or self._ramp_from == float("-inf"):
            return 1.0
        return RAMP_FROM + (1 - RAMP_FROM) * max(0.0, elapsed) / self.ramp_s

    def reserve(self, tokens: int, waiting_since: float | None = None) -> Ticket:
        """Book the next start for a request of `tokens` waiting since `waiting_since` (default now);
        `ticket.start - clock()` is how long to wait."""
        now = self._clock()
        self._forget(now)
        tokens = max(0, int(tokens))
        since = max(min(now, now if waiting_since is None else waiting_since), self._paused_until)
        start = max(now, self._paused_until, self._last_start)
        paced = self.window == "smooth" or self.rate_factor(start) < 1
        ideal_req, ideal_tok = max(self._tat_req, since), max(self._tat_tok, since)
        if self.rpm:
            if paced:
                start = max(start, ideal_req)
            if len(self._log) >= self.rpm:
                oldest = islice(self._log, 0, len(self._log) - self.rpm + 1)  # these must have left the window
                start = max(start, max(map(self._stamp, oldest)) + self.span)
        if self.tpm:
            if paced:
                start = max(start, ideal_tok)
            start = max(start, self._token_window_start(tokens, self.tpm))
        requests_total, tokens_total = self._requests_total + 1, self._tokens_total + tokens
        for kind, total in (("requests", requests_total), ("tokens", tokens_total)):
            if kind in self._allowance:
                start = max(start, self._allowance[kind].earliest(total))
        factor = self.rate_factor(start)
        if self.rpm:
            cost = 60.0 / self.rpm / factor
            self._tat_req = (max(ideal_req, start - cost) if paced else start) + cost
        if self.tpm:
            cost = tokens * 60.0 / self.tpm / factor
            self._tat_tok = (max(ideal_tok, start - cost) if paced else start) + cost
        ticket = Ticket(start, tokens, requests_total, tokens_total)
        self._log.append(ticket)
        self._log_tokens += tokens
        self._requests_total, self._tokens_total = requests_total, tokens_total
        self._last_start = start
        return ticket

    def _token_window_start(self, tokens: int, tpm: int) -> float:
        """The earliest start at which `tokens` more fit in a token window of `tpm` tokens."""
        excess = self._log_tokens + tokens - tpm
        earliest = float("-inf")
        for t in self._log:
            if excess <= 0:
                break
            excess -= t.tokens
            earliest = max(earliest, self._stamp(t) + self.span)
        return earliest

    def _stamp(self, t: Ticket) -> float:
        """When a request counts in the window from: its start, or with "sliding" its answer once it came."""
        return t.end if self.window == "sliding" and t.end is not None else t.start

    def _forget(self, now: float) -> None:
        while self._log and self._stamp(self._log[0]) <= now - self.span:
            t = self._log.popleft()
            t.in_window = False
            self._log_tokens -= t.tokens
        for kind, a in list(self._allowance.items()):
            if a.until <= now:
                del self._allowance[kind]

    def cancel(self, ticket: Ticket) -> None:
        """Take back the latest booking (it did not start)."""
        if self._log and self._log[-1] is ticket:
            self._log.pop()
            ticket.in_window = False
            self._log_tokens -= ticket.tokens
            self._requests_total -= 1
            self._tokens_total -= ticket.tokens

    def pause(self, seconds: float) -> None:
        """Hold every new start for `seconds` (a provider's Retry-After), then ramp back to the full rate."""
        until = self._clock() + max(0.0, seconds)
        self.pauses += 1
        if until > self._paused_until:
            self._paused_until = self._ramp_from = until
            self._tat_req, self._tat_tok = max(self._tat_req, until), max(self._tat_tok, until)

    def correct(self, ticket: Ticket, actual: int | None) -> None:
        """Charge a request's reported tokens in place of its estimate."""
        if actual is None:
            return
        diff = int(actual) - ticket.tokens
        ticket.tokens += diff
        self._tokens_total += diff
        if ticket.in_window:
            self._log_tokens += diff
        if self.tpm:
            self._tat_tok += diff * 60.0 / self.tpm

    def observe(self, ticket: Ticket, kind: str, remaining: float, reset_s: float, limit: float | None = None) -> None:
        """Steer by a provider's account after `ticket`'s request: `remaining` more until it is full again in `reset_s`.

        Without a `limit` header the configured rpm/tpm stands in; without either, nothing more goes until the reset.
        An account that shows no more use than our own window holds changes nothing (and drops an older one).
        """
        limit = limit or (self.rpm if kind == "requests" else self.tpm)
        if limit:
            self._forget(self._clock())
            ours = len(self._log) if kind == "requests" else self._log_tokens
            if limit - remaining <= ours:
                # The provider counts no more than we started within our window (which holds every request
                # it can still count): nobody else draws on this limit, and our window already keeps to it.
                # Its reset is when the whole window is empty again, which read as a steady refill would
                # slow a sliding window's second minute to the smooth pace.
                self._allowance.pop(kind, None)
                return
        total = ticket.requests_total if kind == "requests" else ticket.tokens_total
        rate = (limit - remaining) / reset_s if limit and reset_s > 0 and limit > remaining else 0.0
        seen = Allowance(ticket.start, total + max(0.0, remaining), rate, self._clock() + max(0.0, reset_s))
        old = self._allowance.get(kind)
        if old is None or seen.anchor >= old.anchor:
            self._allowance[kind] = seen
            self.header_holds += 1

    @asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[Ticket]:
        """Hold a concurrency slot and wait for this request's start; the body is one request."""
        ticket = None
        if self._slots:
            await self._slots.acquire()
        try:
            since = self._clock()
            async with self._turn:
                while True:
                    ticket = self.reserve(tokens, since)
                    delay = ticket.start - self._clock()
                    if delay > 0:
                        await self._sleep(delay)
                    if self._paused_until <= self._clock():
                        break
                    self.cancel(ticket)  # a 429 paused the client while this one waited: book again
                ticket.start = max(ticket.start, self._clock())
            yield ticket
        finally:
            if ticket is not None:
                ticket.end = self._clock()
            if self._slots:
                self._slots.release()
