"""The server half of shared pacing: Prefect global concurrency limits with slot decay."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

from tasks.call.shared_pacing import Bucket, Permits, SharedLimit, log, shared_limits
from tasks.config.run import ProviderConfig
from tasks.errors import ConfigError

TEMPORARY_API_ENV = "VIDBATCH_TEMPORARY_PREFECT_API"  # set by flows.prefect_api to the server it started


def on_prefect_server() -> bool:
    """True when runs report to a configured Prefect server (not a temporary one started for the run)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return bool(url) and url != os.environ.get(TEMPORARY_API_ENV)


async def ensure_shared_limits(provider: ProviderConfig) -> list[SharedLimit]:
    """Create or update the provider's global concurrency limits from its profile."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists

    limits = shared_limits(provider)
    async with get_client() as client:
        for lim in limits:
            for _ in range(3):  # two workers may create it at once: the loser updates
                try:
                    await client.upsert_global_concurrency_limit_by_name(lim.name, lim.capacity, lim.decay_per_s)
                    break
                except ObjectAlreadyExists:
                    continue
    return limits


async def acquire_block(limit: SharedLimit, slots: int, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                        clock: Callable[[], float] = time.monotonic) -> float:
    """Take `slots` of a global limit; returns the round trip of the successful acquisition.

    It reads the limit first (no write) and waits for enough decay: on this server a refused increment
    restarts every worker's decay, so asking blindly while the limit is full starves all of them.
    """
    from prefect.client.orchestration import get_client
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.asyncio import rate_limit
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        while True:
            try:
                state = await client.read_global_concurrency_limit_by_name(limit.name)
            except ObjectNotFound:
                raise ConfigError(f"global concurrency limit {limit.name!r} does not exist; it is created from "
                                  "the provider profile when provider.limits.shared is true") from None
            wait = (state.active_slots + slots - state.limit) / max(state.slot_decay_per_second, 1e-9)
            if wait <= 0:
                break
            await sleep(wait + 0.02)
    started = clock()
    try:
        await rate_limit(limit.name, occupy=slots, strict=True)  # strict: a missing or misspelt limit raises
    except ConcurrencySlotAcquisitionError as e:
        raise ConfigError(f"shared limit {limit.name!r}: {e}") from None
    return clock() - started


async def shared_permits(provider: ProviderConfig) -> Permits | None:
    """Permits over the provider's shared limits, when the config asks for them and a Prefect server holds them."""
    if not provider.limits.shared:
        return None
    if not on_prefect_server():
        log.warning("provider.limits.shared is set but no Prefect server is configured (PREFECT_API_URL): "
                    "this run paces itself alone")
        return None
    limits = {lim.name.rsplit("-", 1)[-1]: lim for lim in await ensure_shared_limits(provider)}
    return Permits(Bucket(limits["rpm"], acquire_block) if "rpm" in limits else None,
                   Bucket(limits["tpm"], acquire_block) if "tpm" in limits else None)
