"""The shared limit against Prefect's test server: created from the profile, leased, returned, strict about names."""

from __future__ import annotations

import asyncio
import time

import pytest

from flows.prefect.shared_limits import PrefectLeases, ensure_shared_limits, shared_permits
from tasks.call.shared_pacing import LEASE_S, SharedLimit
from tasks.config.run import ProviderConfig
from tasks.errors import ConfigError
from tests.flows.conftest import prefect_api

pytestmark = pytest.mark.usefixtures("prefect_harness")


def provider(name: str, **limits) -> ProviderConfig:
    return ProviderConfig(name=name, dialect="openai", base_url="https://x", model="m", limits=limits)


async def test_limits_are_created_then_updated_from_the_profile_and_slots_are_leased_and_returned(monkeypatch):
    from prefect.client.orchestration import get_client

    (rpm,) = await ensure_shared_limits(provider("quota-a", rpm=600, shared=True))
    made = prefect_api("GET", f"/v2/concurrency_limits/{rpm.name}")
    assert (made["limit"], made["slot_decay_per_second"]) == (600, 0)
    (changed,) = await ensure_shared_limits(provider("quota-a", rpm=1200, shared=True))
    assert prefect_api("GET", f"/v2/concurrency_limits/{rpm.name}")["limit"] == changed.capacity == 1200
    async with get_client() as client:
        leases = PrefectLeases(client)
        lease = await leases.acquire(changed, 1195, LEASE_S)
        assert lease is not None and await leases.free(changed) == 5
        assert await leases.acquire(changed, 6, LEASE_S) is None  # no room: refused, not over
        await leases.renew(lease, LEASE_S)
        await leases.release(lease)
        assert await leases.free(changed) == 1200
    permits = await shared_permits(provider("quota-a", rpm=1200, shared=True))
    held = await permits.take(1)
    assert prefect_api("GET", f"/v2/concurrency_limits/{rpm.name}")["active_slots"] == 1 and permits.tokens is None
    assert held.requests is not None and permits.requests.stats.leases == 1
    monkeypatch.setattr("tasks.call.shared_pacing.HOLD_S", 0.2)  # the hold, shortened to keep the test quick
    await permits.close()  # never answered: counted from close; a detached process returns it one hold later
    deadline = time.monotonic() + 60
    while prefect_api("GET", f"/v2/concurrency_limits/{rpm.name}")["active_slots"]:
        assert time.monotonic() < deadline, "the lease was not returned by flows.prefect.release_later"
        await asyncio.sleep(0.5)


async def test_a_misspelt_limit_fails_loudly_and_unshared_runs_take_nothing():
    from prefect.client.orchestration import get_client

    await ensure_shared_limits(provider("quota-b", rpm=600, shared=True))
    async with get_client() as client:
        with pytest.raises(ConfigError, match="does not exist"):
            await PrefectLeases(client).free(SharedLimit("vidbatch-quota-bb-rpm", 600))
    assert await shared_permits(provider("quota-b", rpm=600)) is None
