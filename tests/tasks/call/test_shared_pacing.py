import asyncio

import pytest

from tasks.call.shared_pacing import Bucket, Permits, SharedLimit, block_size, limit_name, shared_limits
from tasks.config.run import ProviderConfig
from tasks.errors import ConfigError


def provider(**limits):
    return ProviderConfig(name="Lunos EU", dialect="openai", base_url="https://x", model="m", limits=limits)


class FakeServer:
    """A slot-decay limit as the Prefect server keeps it (capacity, decay per second), on a fake clock."""

    def __init__(self, lim: SharedLimit, clock):
        self.lim, self.clock = lim, clock
        self.active, self.updated = 0.0, 0.0
        self.grants: list[tuple[float, int]] = []

    async def acquire(self, lim: SharedLimit, slots: int) -> float:
        while True:
            decayed = max(0.0, self.active - lim.decay_per_s * (self.clock.now - self.updated))
            if decayed + slots <= lim.capacity:
                self.active, self.updated = decayed + slots, self.clock.now
                self.grants.append((self.clock.now, slots))
                self.clock.now += 0.05  # the round trip
                return 0.05
            await self.clock.sleep((decayed + slots - lim.capacity) / lim.decay_per_s + 1e-6)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    async def sleep(self, s):
        self.now += s
        await asyncio.sleep(0)


def test_block_and_decay_keep_every_minute_under_the_limit():
    assert block_size(150) == 3 and block_size(6000) == 100 and block_size(20) == 1 and block_size(1) == 1
    rpm, tpm = shared_limits(provider(rpm=150, tpm=200_000, shared=True))
    assert rpm.name == limit_name("Lunos EU", "rpm") == "vidbatch-lunos-eu-rpm"
    assert tpm.name == "vidbatch-lunos-eu-tpm"
    for lim in (rpm, tpm):
        assert lim.capacity + lim.decay_per_s * (60 + lim.hold_s) == pytest.approx(lim.per_minute)
    assert shared_limits(provider(concurrency=4)) == []
    with pytest.raises(ConfigError, match="too small to share"):
        shared_limits(provider(rpm=1, shared=True))


async def test_two_processes_sharing_one_limit_never_pass_it_in_any_minute():
    clock = FakeClock()
    lim = shared_limits(provider(rpm=120, shared=True))[0]
    server = FakeServer(lim, clock)
    buckets = [Bucket(lim, server.acquire, clock=clock) for _ in range(2)]
    used: list[float] = []

    async def worker(b: Bucket, n: int):
        for _ in range(n):
            await b.take(1)
            used.append(clock.now)
            await clock.sleep(0.01)

    await asyncio.gather(worker(buckets[0], 200), worker(buckets[1], 200))
    used.sort()
    peak = max(sum(1 for u in used if t <= u < t + 60) for t in used)
    assert peak <= 120
    assert used[-1] > 60 * 400 / 120 * 0.9  # it did wait: 400 requests at about the limit's rate
    assert sum(b.stats.blocks for b in buckets) == len(server.grants)


async def test_unused_slots_expire_and_big_requests_take_several_blocks():
    clock = FakeClock()
    lim = SharedLimit("t", per_minute=600, block=10, hold_s=2.0)
    server = FakeServer(lim, clock)
    b = Bucket(lim, server.acquire, clock=clock)
    await b.take(1)
    clock.now += 5  # the other 9 slots are past their hold
    await b.take(25)
    assert b.stats.expired >= 9 and b.stats.slots >= 35
    permits = Permits(b, None)
    await permits.take(10_000)
    assert "vidbatch" not in permits.summary() and "blocks" in permits.summary()
    await permits.close()
