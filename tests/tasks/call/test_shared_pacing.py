import asyncio
import heapq
import random

import pytest

from tasks.call.shared_pacing import HOLD_S, LEASE_S, Bucket, Permits, SharedLimit, limit_name, shared_limits
from tasks.config.run import ProviderConfig


def provider(**limits):
    return ProviderConfig(name="Lunos EU", dialect="openai", base_url="https://x", model="m", limits=limits)


class FakeClock:
    """Virtual time: `sleep` waits until `run` has moved the clock past its wake-up; nothing really waits."""

    def __init__(self):
        self.now = 0.0
        self._wakes: list[tuple[float, int, asyncio.Future]] = []
        self._n = 0

    def __call__(self):
        return self.now

    async def sleep(self, s):
        fut = asyncio.get_running_loop().create_future()
        self._n += 1
        heapq.heappush(self._wakes, (self.now + max(0.0, s), self._n, fut))
        await fut

    async def run(self, coro):
        """Run `coro` to its end, moving the clock to the next wake-up whenever every task is waiting."""
        main, loop = asyncio.ensure_future(coro), asyncio.get_running_loop()
        while not main.done():
            await asyncio.sleep(0)
            while loop._ready:  # type: ignore[attr-defined]  # every ready task runs until it waits again
                await asyncio.sleep(0)
            if main.done() or not self._wakes:
                continue
            t, _, fut = heapq.heappop(self._wakes)
            self.now = max(self.now, t)
            if not fut.done():
                fut.set_result(None)
        return main.result()


class FakeLeases:
    """A Prefect-like counter of leased slots (no decay) on a fake clock; leases lapse at their expiry."""

    def __init__(self, clock, round_trip=0.02):
        self.clock, self.round_trip = clock, round_trip
        self.leases: dict[str, tuple[str, int, float]] = {}  # id -> (limit, slots, expires)
        self.capacity: dict[str, int] = {}
        self.renewals = 0
        self.n = 0

    def active(self, name):
        self.leases = {k: v for k, v in self.leases.items() if v[2] > self.clock.now}
        return sum(slots for lim, slots, _ in self.leases.values() if lim == name)

    async def free(self, limit):
        self.capacity[limit.name] = limit.capacity
        return limit.capacity - self.active(limit.name)

    async def acquire(self, limit, slots, lease_s):
        await self.clock.sleep(self.round_trip / 2)
        if self.active(limit.name) + slots > self.capacity.get(limit.name, limit.capacity):  # the server's size
            return None
        self.n += 1
        lease_id = str(self.n)  # not str(self.n) after the await: another acquire may have come in between
        self.leases[lease_id] = (limit.name, slots, self.clock.now + lease_s)
        await self.clock.sleep(self.round_trip / 2)
        return lease_id

    async def renew(self, lease_id, lease_s):
        assert lease_s >= 60
        if lease_id in self.leases:
            lim, slots, _ = self.leases[lease_id]
            self.leases[lease_id] = (lim, slots, self.clock.now + lease_s)
            self.renewals += 1

    async def release(self, lease_id):
        self.leases.pop(lease_id, None)


def max_window(times, span=60.0):
    times, best, j = sorted(times), 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_limits_are_named_and_sized_from_the_profile():
    rpm, tpm = shared_limits(provider(rpm=150, tpm=200_000, shared=True))
    assert rpm.name == limit_name("Lunos EU", "rpm") == "vidbatch-lunos-eu-rpm" and rpm.capacity == 150
    assert tpm.name == "vidbatch-lunos-eu-tpm" and tpm.capacity == 200_000
    assert shared_limits(provider(concurrency=4)) == []
    assert LEASE_S >= 60 and HOLD_S > 60


@pytest.mark.parametrize("workers", [2, 4])
async def test_workers_sharing_one_limit_reach_it_and_never_pass_it_in_any_minute(workers):
    clock, rng = FakeClock(), random.Random(workers)
    lim = SharedLimit("vidbatch-p-rpm", per_minute=120)
    server = FakeLeases(clock)
    buckets = [Bucket(lim, server, clock=clock, sleep=clock.sleep) for _ in range(workers)]
    starts: list[float] = []
    answers: list[float] = []

    async def request(b: Bucket):
        hold = await b.take(1)
        starts.append(clock.now)
        await clock.sleep(rng.uniform(0.05, 0.8))  # the provider's answer
        answers.append(clock.now)
        b.finish(hold)

    async def worker(b: Bucket, n: int):
        pending = []
        for _ in range(n):  # each worker paces itself at the full rpm: only the shared limit holds them back
            pending.append(asyncio.ensure_future(request(b)))
            await clock.sleep(60 / 120)
        await asyncio.gather(*pending)
        await b.close()

    per_worker = 600 // workers
    await clock.run(asyncio.gather(*(worker(b, per_worker) for b in buckets)))
    assert max_window(starts) <= 120 and max_window(answers) <= 120
    # steady part: from the first minute on, the mean of every 60 s window inside the run
    t0, t1 = min(starts), max(starts)
    means = [sum(1 for s in starts if t <= s < t + 60) for t in [t0 + 60 + i for i in range(int(t1 - t0 - 120))]]
    print(f"\n{workers} workers: steady {sum(means) / len(means) / 120:.3f} of the limit, peak {max_window(starts)}")
    assert sum(means) / len(means) / 120 >= 0.95, sum(means) / len(means)
    assert server.active(lim.name) == 0  # every slot went back by close()
    assert sum(b.stats.slots for b in buckets) == 600 >= sum(b.stats.leases for b in buckets)


async def test_a_request_in_flight_longer_than_its_lease_keeps_its_slots_until_after_its_answer():
    clock = FakeClock()
    lim = SharedLimit("t", per_minute=10)
    server = FakeLeases(clock)
    b = Bucket(lim, server, clock=clock, sleep=clock.sleep)

    async def scenario():
        hold = await b.take(1)
        await clock.sleep(300)  # 300 s in flight: the keeper renews the lease meanwhile
        assert server.active("t") == 1 and server.renewals > 0
        b.finish(hold)
        answered = clock.now
        await clock.sleep(HOLD_S - 1)
        assert server.active("t") == 1  # not returned before HOLD_S after the answer
        await b.close()
        assert server.active("t") == 0 and clock.now >= answered + HOLD_S

    await clock.run(scenario())


async def test_tokens_beyond_the_estimate_are_charged_to_the_next_request():
    clock = FakeClock()
    tpm = SharedLimit("tok", per_minute=10_000)
    server = FakeLeases(clock)
    permits = Permits(None, Bucket(tpm, server, clock=clock, sleep=clock.sleep))

    async def scenario():
        held = await permits.take(1_000)
        permits.finish(held)
        permits.correct(1_000, 1_600)  # the answer reported more than estimated
        permits.correct(1_000, 400)  # less: nothing is charged back (the slots stay held to the hold's end)
        assert server.active("tok") == 1_000
        held2 = await permits.take(1_000)
        assert held2.tokens is not None and held2.tokens.slots == 1_600 and server.active("tok") == 2_600
        assert "600 charged after the answer" in permits.summary()
        permits.finish(held2)
        await permits.close()
        assert server.active("tok") == 0

    await clock.run(scenario())
