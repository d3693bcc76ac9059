"""The shared limit against Prefect's test server: created from the profile, taken in blocks, strict about names."""

from __future__ import annotations

import dataclasses

import pytest

from flows.prefect.shared_limits import acquire_block, ensure_shared_limits, shared_permits
from tasks.config.run import ProviderConfig
from tasks.errors import ConfigError
from tests.flows.conftest import prefect_api

pytestmark = pytest.mark.usefixtures("prefect_harness")


def provider(name: str, **limits) -> ProviderConfig:
    return ProviderConfig(name=name, dialect="openai", base_url="https://x", model="m", limits=limits)


async def test_limits_are_created_then_updated_from_the_profile_and_taken_in_blocks():
    (rpm,) = await ensure_shared_limits(provider("quota-a", rpm=600, shared=True))
    made = prefect_api("GET", f"/v2/concurrency_limits/{rpm.name}")
    assert (made["limit"], made["slot_decay_per_second"]) == (rpm.capacity, pytest.approx(rpm.decay_per_s))
    (changed,) = await ensure_shared_limits(provider("quota-a", rpm=1200, shared=True))
    updated = prefect_api("GET", f"/v2/concurrency_limits/{rpm.name}")
    assert (updated["limit"], updated["slot_decay_per_second"]) == (changed.capacity,
                                                                    pytest.approx(changed.decay_per_s))
    round_trip = await acquire_block(changed, changed.block)
    assert round_trip > 0 and prefect_api("GET", f"/v2/concurrency_limits/{rpm.name}")["active_slots"] > 0
    permits = await shared_permits(provider("quota-a", rpm=1200, shared=True))
    await permits.take(1)
    assert permits.requests.stats.blocks == 1 and permits.tokens is None
    await permits.close()


async def test_a_misspelt_limit_fails_loudly_and_unshared_runs_take_nothing():
    (rpm,) = await ensure_shared_limits(provider("quota-b", rpm=600, shared=True))
    with pytest.raises(ConfigError, match="does not exist"):
        await acquire_block(dataclasses.replace(rpm, name="vidbatch-quota-bb-rpm"), 1)
    assert await shared_permits(provider("quota-b", rpm=600)) is None
