"""A backfill's turns: more shards are started than may send at once, and each waits for a turn to send.

A shard's flow run spends seconds before its first request (a worker polls, starts a Python process, the
flow lists and probes its first batch). When shards start only as others end, the provider's rate goes
unused for those seconds at every change of shard: a paced sender cannot win back the slots it left
idle (its pace banks no idle time). So the backfill starts `max_parallel + ahead` shards, and each
takes one of `max_parallel` turns (slots of a counter on the server, under a lease renewed while it
sends) just before its first request and gives it back at its end: the shard that is ready takes the
turn the moment another gives it back.

A shard killed while it holds a turn leaves the lease to expire on the server (LEASE_S after its last
renewal), so its turn comes back late, never twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tasks.call.shared_pacing import LeaseServer, SharedLimit
from tasks.errors import ConfigError

log = logging.getLogger(__name__)

LEASE_S = 60.0  # a turn's lease lapses this long after its last renewal (a killed shard's turn comes back)


RENEW_S = 15.0  # how often a held turn's lease is renewed


POLL_S = 0.5  # how often a waiting shard asks again for a turn


def turns_name(backfill_run_id: str) -> str:
    """The name of the counter a backfill's shards take turns from."""
    return f"vidbatch-backfill-{backfill_run_id}"


class Turn:
    """`async with Turn(...)`: wait for one of the backfill's turns, hold it (renewed) until the block ends.

    When the counter does not exist (its backfill ended, or the shard was started by hand with a stale name)
    the shard sends without waiting, and says so.
    """

    def __init__(self, server: LeaseServer, name: str, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 poll_s: float = POLL_S):
        # the counter's size is the backfill's (set on the server); the client side only names it and takes 1
        self.server, self.limit, self._sleep, self.poll_s = server, SharedLimit(name, 1), sleep, poll_s
        self.lease_id: str | None = None
        self.waited_polls = 0
        self._renewer: asyncio.Task | None = None

    async def __aenter__(self) -> Turn:
        while True:
            try:
                self.lease_id = await self.server.acquire(self.limit, 1, LEASE_S)
            except ConfigError:
                log.warning("backfill turns %r do not exist (the backfill ended?): sending without a turn",
                            self.limit.name)
                return self
            if self.lease_id is not None:
                break
            self.waited_polls += 1
            await self._sleep(self.poll_s)
        self._renewer = asyncio.ensure_future(self._renew())
        return self

    async def _renew(self) -> None:
        assert self.lease_id is not None
        while True:
            await self._sleep(RENEW_S)
            try:
                await self.server.renew(self.lease_id, LEASE_S)
            except Exception as e:  # noqa: BLE001 - a lost renewal costs at most a turn lent early; sending goes on
                log.warning("could not renew the backfill turn %s: %s", self.limit.name, e)

    async def __aexit__(self, *exc: object) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self.lease_id is not None:
            lease_id, self.lease_id = self.lease_id, None
            try:
                await self.server.release(lease_id)
            except Exception as e:  # noqa: BLE001 - the lease expires on the server by itself
                log.warning("could not give back the backfill turn %s (it lapses in %.0f s): %s",
                            self.limit.name, LEASE_S, e)
