"""Pacing of requests/min, tokens/min and concurrency together, with an injectable clock and sleep.

rpm and tpm are each a GCRA schedule (a virtual "theoretical arrival time"): a request may start
once both schedules allow it, and then pushes each forward by its cost (60/rpm seconds, and
tokens*60/tpm seconds). There is no burst allowance, so a run starts at full rate at once and
never goes above the limit in any window.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Awaitable, Callable


class Limiter:
    def __init__(self, rpm: int | None = None, tpm: int | None = None, concurrency: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.rpm, self.tpm, self.concurrency = rpm, tpm, concurrency
        self._clock, self._sleep = clock, sleep
        self._tat_req = self._tat_tok = float("-inf")
        self._paused_until = float("-inf")
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None

    def reserve(self, tokens: int) -> float:
        """Book the next start for a request of `tokens`; return how long to wait before it starts."""
        now = self._clock()
        start = max(now, self._paused_until, self._tat_req if self.rpm else now, self._tat_tok if self.tpm else now)
        if self.rpm:
            self._tat_req = start + 60.0 / self.rpm
        if self.tpm:
            self._tat_tok = start + max(0, tokens) * 60.0 / self.tpm
        return start - now

    def pause(self, seconds: float) -> None:
        """Hold every new start for `seconds` (a provider's Retry-After)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def correct(self, estimated: int, actual: int) -> None:
        """Charge the difference between a request's reported and estimated tokens."""
        if self.tpm and actual is not None:
            self._tat_tok += (actual - estimated) * 60.0 / self.tpm

    @asynccontextmanager
    async def slot(self, tokens: int):
        """Hold a concurrency slot and wait for the pace; the body is one request."""
        if self._slots:
            await self._slots.acquire()
        try:
            delay = self.reserve(tokens)
            if delay > 0:
                await self._sleep(delay)
            yield
        finally:
            if self._slots:
                self._slots.release()
