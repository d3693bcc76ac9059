"""One provider rate across workers: rpm and tpm as global limits with slot decay, taken in blocks."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tasks.config.run import ProviderConfig
from tasks.errors import ConfigError

log = logging.getLogger(__name__)


WINDOW_S = 60.0


BLOCK_S = 1.0         # a block holds about this many seconds of the full rate


MAX_BLOCK_SHARE = 10  # ... and at most 1/MAX_BLOCK_SHARE of the per-minute limit


MIN_HOLD_S = 2.0


PREFETCH_LEAD_S = 0.5  # prefetch the next block when the stock lasts less than this at the local pace


@dataclass(frozen=True)
class SharedLimit:
    """One per-minute provider limit as a Prefect global concurrency limit: its name, block and hold."""

    name: str
    per_minute: int
    block: int
    hold_s: float

    @property
    def capacity(self) -> int:
        return self.block

    @property
    def decay_per_s(self) -> float:
        """Slot decay that keeps every 60 s at or under `per_minute` (see the module docstring)."""
        return (self.per_minute - self.block) / (WINDOW_S + self.hold_s)

    @property
    def effective_per_minute(self) -> float:
        return self.decay_per_s * WINDOW_S


def block_size(per_minute: int) -> int:
    """Slots per server round trip: BLOCK_S of the full rate, at most 1/MAX_BLOCK_SHARE of the limit, at least 1."""
    return max(1, min(math.ceil(per_minute / WINDOW_S * BLOCK_S), per_minute // MAX_BLOCK_SHARE))


def limit_name(provider: str, kind: str) -> str:
    """The global concurrency limit's name for a provider's rpm or tpm."""
    return f"vidbatch-{re.sub(r'[^a-z0-9-]+', '-', provider.lower()).strip('-')}-{kind}"


def shared_limits(provider: ProviderConfig) -> list[SharedLimit]:
    """The provider's rpm and tpm as shared limits (none when it sets neither)."""
    out = []
    for kind, per_minute in (("rpm", provider.limits.rpm), ("tpm", provider.limits.tpm)):
        if per_minute:
            block = block_size(per_minute)
            if per_minute <= block:
                raise ConfigError(f"provider.limits.{kind} {per_minute} is too small to share across workers "
                                  f"(it must exceed its block of {block})")
            hold = max(MIN_HOLD_S, 3 * block / (per_minute / WINDOW_S))
            out.append(SharedLimit(limit_name(provider.name, kind), per_minute, block, hold))
    return out


@dataclass
class _Block:
    expires: float
    left: int


@dataclass
class PacingStats:
    """Blocks taken, slots dropped unused, and the server round trip of each uncontended acquisition."""

    blocks: int = 0
    slots: int = 0
    expired: int = 0
    round_trips_s: list[float] = field(default_factory=list)

    def summary(self) -> str:
        rt = sorted(self.round_trips_s)
        median = rt[len(rt) // 2] * 1000 if rt else float("nan")
        return (f"{self.blocks} blocks, {self.slots} slots, {self.expired} dropped unused, "
                f"median acquisition {median:.0f} ms")


class Bucket:
    """A local stock of slots of one shared limit, refilled a block at a time by `acquire(name, slots)`."""

    def __init__(self, limit: SharedLimit, acquire: Callable[[SharedLimit, int], Awaitable[float]],
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self._acquire, self._clock = limit, acquire, clock
        self._stock: deque[_Block] = deque()
        self._refill: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._last_take: float | None = None
        self._interval: float | None = None  # smoothed time between takes: how fast this process uses slots
        self.stats = PacingStats()

    def _left(self) -> int:
        now = self._clock()
        while self._stock and (self._stock[0].expires <= now or self._stock[0].left <= 0):
            self.stats.expired += self._stock.popleft().left
        return sum(b.left for b in self._stock)

    async def _take_block(self, slots: int) -> None:
        round_trip = await self._acquire(self.limit, slots)
        granted_after = self._clock() - round_trip  # the grant came during the acquiring request: hold from its start
        self.stats.blocks += 1
        self.stats.slots += slots
        self.stats.round_trips_s.append(round_trip)
        self._stock.append(_Block(granted_after + self.limit.hold_s, slots))

    def _start_refill(self) -> asyncio.Task:
        if self._refill is None or self._refill.done():
            self._refill = asyncio.ensure_future(self._take_block(self.limit.block))
        return self._refill

    async def take(self, n: int = 1) -> None:
        """Wait until `n` slots are used from the stock; prefetch the next block just before the stock runs out.

        Slots are used as they arrive, so a request larger than a block takes several blocks in turn. The
        prefetch waits until the stock lasts less than PREFETCH_LEAD_S at this process's own pace: a block
        fetched early would sit out its hold and be dropped when several processes share the rate.
        """
        n = max(0, int(n))
        async with self._lock:
            now = self._clock()
            if self._last_take is not None:
                gap = now - self._last_take
                self._interval = gap if self._interval is None else 0.7 * self._interval + 0.3 * gap
            self._last_take = now
            while n > 0:
                if not self._left():
                    await self._start_refill()
                    continue
                b = self._stock[0]
                used = min(b.left, n)
                b.left -= used
                n -= used
            left = self._left()
            if left < self.limit.block and (self._interval is None or left * self._interval < PREFETCH_LEAD_S):
                self._start_refill()

    async def close(self) -> None:
        if self._refill is not None and not self._refill.done():
            self._refill.cancel()
            try:
                await self._refill
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - a prefetch cut short at the end of a run
                pass


class Permits:
    """What ProviderClient awaits before each request: one rpm slot and the request's estimated tpm slots."""

    def __init__(self, requests: Bucket | None, tokens: Bucket | None):
        self.requests, self.tokens = requests, tokens

    async def take(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.take(1)
        if self.tokens is not None:
            await self.tokens.take(estimated_tokens)

    def summary(self) -> str:
        return "; ".join(f"{b.limit.name}: {b.stats.summary()}" for b in (self.requests, self.tokens) if b)

    async def close(self) -> None:
        for b in (self.requests, self.tokens):
            if b is not None:
                await b.close()
