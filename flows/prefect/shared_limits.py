"""The server half of shared pacing: Prefect global concurrency limits (no decay) holding leased slots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import httpx

from tasks.call.shared_pacing import Bucket, Permits, SharedLimit, log, shared_limits
from tasks.call.turns import Turn
from tasks.config.run import ProviderConfig
from tasks.errors import ConfigError

TEMPORARY_API_ENV = "VIDBATCH_TEMPORARY_PREFECT_API"  # set by flows.prefect_api to the server it started


def on_prefect_server() -> bool:
    """True when runs report to a configured Prefect server (not a temporary one started for the run)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return bool(url) and url != os.environ.get(TEMPORARY_API_ENV)


async def ensure_shared_limits(provider: ProviderConfig) -> list[SharedLimit]:
    """Create or update the provider's global concurrency limits from its profile: capacity rpm (tpm), no decay."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists

    limits = shared_limits(provider)
    async with get_client() as client:
        for lim in limits:
            for _ in range(3):  # two workers may create it at once: the loser updates
                try:
                    await client.upsert_global_concurrency_limit_by_name(lim.name, lim.capacity, 0.0)
                    break
                except ObjectAlreadyExists:
                    continue
    return limits


class PrefectLeases:
    """`LeaseServer` over one Prefect client: reads, increments with a lease, renewals and releases."""

    def __init__(self, client):
        self.client = client

    async def free(self, limit: SharedLimit) -> int:
        from prefect.exceptions import ObjectNotFound

        try:
            state = await self.client.read_global_concurrency_limit_by_name(limit.name)
        except ObjectNotFound:
            raise ConfigError(f"global concurrency limit {limit.name!r} does not exist; it is created from "
                              "the provider profile when provider.limits.shared is true") from None
        if state.slot_decay_per_second:
            raise ConfigError(f"global concurrency limit {limit.name!r} decays ({state.slot_decay_per_second}/s): "
                              "a run of an older vidbatch set it; this one returns slots instead")
        return int(state.limit - state.active_slots)

    async def acquire(self, limit: SharedLimit, slots: int, lease_s: float) -> str | None:
        try:
            r = await self.client.increment_concurrency_slots_with_lease(
                names=[limit.name], slots=slots, mode="concurrency", lease_duration=lease_s)
        except httpx.HTTPStatusError as e:
            if e.response.status_code == 423:  # no room: someone took the slots between our read and this
                return None
            raise
        body = r.json()
        if not body.get("limits"):  # the server grants a lease over no limit when the name is unknown
            raise ConfigError(f"global concurrency limit {limit.name!r} does not exist")
        return str(body["lease_id"])

    async def renew(self, lease_id: str, lease_s: float) -> None:
        await self.client.renew_concurrency_lease(UUID(lease_id), lease_duration=lease_s)

    async def release(self, lease_id: str) -> None:
        await self.client.release_concurrency_slots_with_lease(UUID(lease_id))


def release_later(pending: dict[str, float]) -> None:
    """Give leases back at their times (`pending`: lease id -> seconds from now) from a detached process, so a run
    ends without waiting for its holds. The process gets wall-clock deadlines: its own start-up is not added."""
    from prefect.settings import PREFECT_API_URL

    if pending:
        now = time.time()
        deadlines = {lease_id: now + after_s for lease_id, after_s in pending.items()}
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or ""}  # the server these permits use
        subprocess.Popen([sys.executable, "-m", "flows.prefect.release_later", json.dumps(deadlines)], env=env,
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


class SharedPermits(Permits):
    """Permits whose Prefect client lives as long as they do; the last returns are handed to `release_later`."""

    def __init__(self, client, requests: Bucket | None, tokens: Bucket | None):
        super().__init__(requests, tokens)
        self._client = client

    async def close(self) -> None:
        pending: dict[str, float] = {}
        try:
            for b in (self.requests, self.tokens):
                if b is not None:
                    await b.close(hand_off=pending.update)
        finally:
            release_later(pending)  # one process for both limits: a shard's end is a burst of work on its machine
            await self._client.__aexit__(None, None, None)


async def shared_permits(provider: ProviderConfig) -> Permits | None:
    """Permits over the provider's shared limits, when the config asks for them and a Prefect server holds them."""
    from prefect.client.orchestration import get_client

    if not provider.limits.shared:
        return None
    if not on_prefect_server():
        log.warning("provider.limits.shared is set but no Prefect server is configured (PREFECT_API_URL): "
                    "this run paces itself alone")
        return None
    limits = {lim.name.rsplit("-", 1)[-1]: lim for lim in await ensure_shared_limits(provider)}
    client = get_client()
    await client.__aenter__()
    server = PrefectLeases(client)
    return SharedPermits(client, Bucket(limits["rpm"], server) if "rpm" in limits else None,
                         Bucket(limits["tpm"], server) if "tpm" in limits else None)


async def open_turns(name: str, turns: int) -> None:
    """The counter a backfill's shards take turns from: `turns` slots, no decay (tasks/call/turns.py)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await client.upsert_global_concurrency_limit_by_name(name, max(1, turns), 0.0)


async def close_turns(name: str) -> None:
    """Delete a backfill's counter at its end (a shard still holding a turn finds it gone and goes on)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.delete_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            pass


@asynccontextmanager
async def backfill_turn(name: str | None) -> AsyncIterator[Turn | None]:
    """Hold one of a backfill's turns (`name` from its parameters) for the block; no name, no turn."""
    from prefect.client.orchestration import get_client

    if not name:
        yield None
        return
    async with get_client() as client, Turn(PrefectLeases(client), name) as turn:
        yield turn
