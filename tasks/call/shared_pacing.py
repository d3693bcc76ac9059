"""One provider rate across workers: rpm and tpm as shared sliding windows of leased slots.

Each limit is a counter on a server with capacity `per_minute` and no decay. A request takes its slots
(1 for rpm, its estimated tokens for tpm) under a lease before it is sent, and the slots go back
HOLD_S after its answer (or failure) came back. A slot is therefore held over every 60 s window that
counts the request, whether the provider counts it at arrival or at its answer, so no 60 s window sees
more than `per_minute`; and since slots are returned, not left to decay, the rate reaches
per_minute * 60 / (60 + margin + latency) in steady use (~0.98 at 120 rpm with sub-second answers).

A lease that is not returned (a worker killed) expires on the server after LEASE_S; while a request
is in flight its lease is renewed, so expiry never comes before HOLD_S after the answer. Tokens are
charged by the estimate; an answer that used more is charged as debt to the next request's slots, so
the shared count never stays below what the provider counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from tasks.config.run import ProviderConfig

log = logging.getLogger(__name__)


WINDOW_S = 60.0


MARGIN_S = 0.5  # between our answer and a provider's count, and between two machines' clocks ticking


HOLD_S = WINDOW_S + MARGIN_S  # a request's slots go back this long after its answer


LEASE_S = HOLD_S + 30.0  # the server returns a lease's slots by itself this long after its last renewal


RENEW_BEFORE_S = HOLD_S + 10.0  # an in-flight lease is renewed when it would expire sooner than this


@dataclass(frozen=True)
class SharedLimit:
    """One per-minute provider limit as a server-side counter of leased slots."""

    name: str
    per_minute: int

    @property
    def capacity(self) -> int:
        return self.per_minute

    def poll_s(self, slots: int) -> float:
        """How long to wait before looking again when the counter is full: about the time `slots` take to free."""
        return min(1.0, max(0.05, slots * WINDOW_S / self.per_minute / 2))


def limit_name(provider: str, kind: str) -> str:
    """The global concurrency limit's name for a provider's rpm or tpm."""
    return f"vidbatch-{re.sub(r'[^a-z0-9-]+', '-', provider.lower()).strip('-')}-{kind}"


def shared_limits(provider: ProviderConfig) -> list[SharedLimit]:
    """The provider's rpm and tpm as shared limits (none when it sets neither)."""
    return [SharedLimit(limit_name(provider.name, kind), per_minute)
            for kind, per_minute in (("rpm", provider.limits.rpm), ("tpm", provider.limits.tpm)) if per_minute]


class LeaseServer(Protocol):
    """The server half (flows/prefect/shared_limits.py over Prefect global concurrency limits)."""

    async def free(self, limit: SharedLimit) -> int:
        """Slots not held now (raises ConfigError when the limit does not exist)."""

    async def acquire(self, limit: SharedLimit, slots: int, lease_s: float) -> str | None:
        """Take `slots` under a new lease; None when the counter has no room for them."""

    async def renew(self, lease_id: str, lease_s: float) -> None: ...

    async def release(self, lease_id: str) -> None: ...


@dataclass(eq=False)
class Lease:
    """Slots taken in one server round trip for the requests waiting then; back HOLD_S after the last answer."""

    lease_id: str
    slots: int
    expires: float
    users: int
    last_answer: float = float("-inf")


@dataclass(eq=False)
class Hold:
    """One request's share of a lease."""

    lease: Lease
    slots: int
    answered: float | None = None


@dataclass
class PacingStats:
    """Leases taken, slots they held, refusals, and the server round trip of each grant."""

    leases: int = 0
    slots: int = 0
    refused: int = 0
    debt: int = 0
    round_trips_s: list[float] = field(default_factory=list)

    def summary(self) -> str:
        rt = sorted(self.round_trips_s)
        median = rt[len(rt) // 2] * 1000 if rt else float("nan")
        return (f"{self.leases} leases, {self.slots} slots, {self.refused} refused, {self.debt} charged after "
                f"the answer, median acquisition {median:.0f} ms")


class Bucket:
    """This process's side of one shared limit: take slots for a request, return them HOLD_S after its answer.

    Requests that wait together are granted together: one read and one lease for all the waiters that fit.
    """

    def __init__(self, limit: SharedLimit, server: LeaseServer, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.limit, self.server, self._clock, self._sleep = limit, server, clock, sleep
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()
        self._acquirer: asyncio.Task | None = None
        self._inflight: set[Lease] = set()  # leases some of whose requests are not answered yet
        self._tasks: set[asyncio.Task] = set()
        self._returning: dict[str, float] = {}  # lease id -> when it goes back (this clock)
        self._keeper: asyncio.Task | None = None
        self.debt = 0
        self.stats = PacingStats()

    async def take(self, n: int = 1) -> Hold | None:
        """Wait until `n` slots are held under a lease for this request; None for a request of no slots."""
        n = min(max(0, int(n)), self.limit.capacity)
        if n <= 0:
            return None
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting.append((n, fut))
        if self._acquirer is None or self._acquirer.done():
            self._acquirer = asyncio.ensure_future(self._acquire())
        return await fut

    async def _acquire(self) -> None:
        try:
            while self._waiting:
                free = await self.server.free(self.limit)  # a read first: a refused write costs the server more
                first = min(self._waiting[0][0] + self.debt, self.limit.capacity)
                if free < first:
                    await self._sleep(self.limit.poll_s(first - free))
                    continue
                batch, total = [], first
                for i, (n, _) in enumerate(self._waiting):
                    if i and total + n > free:
                        break
                    batch.append(i)
                    total += n if i else 0
                started = self._clock()
                lease_id = await self.server.acquire(self.limit, total, LEASE_S)
                if lease_id is None:
                    self.stats.refused += 1
                    continue
                self.stats.round_trips_s.append(self._clock() - started)
                self.stats.leases += 1
                self.stats.slots += total
                lease = Lease(lease_id, total, started + LEASE_S, users=len(batch))
                self._inflight.add(lease)
                for i in range(len(batch)):
                    n, fut = self._waiting.popleft()
                    if not fut.done():
                        fut.set_result(Hold(lease, n + (self.debt if i == 0 else 0)))
                    else:  # the request was cancelled while it waited: its share is answered now
                        self.finish(Hold(lease, n))
                self.debt = 0
                if self._keeper is None or self._keeper.done():
                    self._keeper = asyncio.ensure_future(self._keep())
        except BaseException as e:
            for _, fut in self._waiting:
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
            self._waiting.clear()
            raise

    def charge(self, extra: int) -> None:
        """An answer used `extra` more slots than it was given: the next request takes them too."""
        if extra > 0:
            self.debt += extra
            self.stats.debt += extra

    def finish(self, hold: Hold | None) -> None:
        """The request's answer (or failure) is back: its lease goes back HOLD_S after its last request's."""
        if hold is None or hold.answered is not None:
            return
        hold.answered = self._clock()
        lease = hold.lease
        lease.last_answer = max(lease.last_answer, hold.answered)
        lease.users -= 1
        if lease.users <= 0:
            self._inflight.discard(lease)
            task = asyncio.ensure_future(self._return(lease))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _return(self, lease: Lease) -> None:
        release_at = lease.last_answer + HOLD_S
        self._returning[lease.lease_id] = release_at
        if lease.expires < release_at + 1.0:  # the lease would lapse before its slots may go back
            await self.server.renew(lease.lease_id, max(WINDOW_S, release_at + 5.0 - self._clock()))
            lease.expires = release_at + 5.0
        await self._sleep(max(0.0, release_at - self._clock()))
        await self.server.release(lease.lease_id)
        self._returning.pop(lease.lease_id, None)

    async def _keep(self) -> None:
        """Renew the leases of requests still in flight, so none lapses before its answer is back."""
        while self._inflight:
            now = self._clock()
            for lease in list(self._inflight):
                if lease.expires - now < RENEW_BEFORE_S:
                    await self.server.renew(lease.lease_id, LEASE_S)
                    lease.expires = self._clock() + LEASE_S
            await self._sleep(5.0)

    async def close(self, hand_off: Callable[[dict[str, float]], None] | None = None) -> None:
        """Return every slot on time: wait for it (at most HOLD_S after the last answer), or hand the
        returns still pending to `hand_off` (lease id -> seconds from now), which gives them back then.

        Returning them on time, not leaving them to lapse, is what keeps the shared rate whole when
        shards are short. A run killed here leaves its leases to expire on the server (LEASE_S).
        """
        if self._acquirer is not None and not self._acquirer.done():
            self._acquirer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acquirer
        for lease in list(self._inflight):  # taken but never finished: counted from now
            lease.users = 1
            self.finish(Hold(lease, 0))
        await asyncio.sleep(0)  # the returns just started note their times
        try:
            if hand_off is not None and self._tasks:
                pending = {k: max(0.0, t - self._clock()) for k, t in self._returning.items()}
                for task in self._tasks:
                    task.cancel()
                hand_off(pending)
            elif self._tasks:
                await asyncio.gather(*self._tasks)
        finally:
            if self._keeper is not None:
                self._keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._keeper


@dataclass
class Held:
    """What `Permits.take` gave one request: its rpm and tpm holds."""

    requests: Hold | None
    tokens: Hold | None


class Permits:
    """What ProviderClient awaits before each request: one rpm slot and the request's estimated tpm slots."""

    def __init__(self, requests: Bucket | None, tokens: Bucket | None):
        self.requests, self.tokens = requests, tokens

    async def take(self, estimated_tokens: int) -> Held:
        r = await self.requests.take(1) if self.requests is not None else None
        t = await self.tokens.take(estimated_tokens) if self.tokens is not None else None
        return Held(r, t)

    def finish(self, held: Held | None) -> None:
        """The request is answered or failed: start the clocks that return its slots."""
        if held is None:
            return
        for bucket, hold in ((self.requests, held.requests), (self.tokens, held.tokens)):
            if bucket is not None:
                bucket.finish(hold)

    def correct(self, estimated_tokens: int, actual_tokens: int | None) -> None:
        """The usage an answer reported: tokens beyond the estimate are charged to the next request."""
        if self.tokens is not None and actual_tokens is not None:
            self.tokens.charge(int(actual_tokens) - max(0, int(estimated_tokens)))

    def summary(self) -> str:
        return "; ".join(f"{b.limit.name}: {b.stats.summary()}" for b in (self.requests, self.tokens) if b)

    async def close(self) -> None:
        for b in (self.requests, self.tokens):
            if b is not None:
                await b.close()
