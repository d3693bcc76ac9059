"""A backfill's turns: shards started ahead wait, ready, and at most `max_parallel` of them send at once."""

import asyncio

from tasks.call.turns import LEASE_S, Turn
from tasks.errors import ConfigError
from tests.tasks.call.test_shared_pacing import FakeClock, FakeLeases

NAME = "vidbatch-backfill-test"


async def test_shards_started_ahead_take_turns_and_the_next_starts_the_moment_one_ends():
    clock = FakeClock()
    server = FakeLeases(clock)
    capacity, busy_s = 2, [30.0, 50.0, 20.0, 40.0, 10.0]
    sending: list[int] = []
    spans: list[tuple[float, float]] = []

    async def shard(n: int):
        async with Turn(server, NAME, sleep=clock.sleep):
            sending.append(n)
            assert len(sending) <= capacity, sending
            start = clock.now
            await clock.sleep(busy_s[n])
            spans.append((start, clock.now))
            sending.remove(n)

    async def scenario():
        server.capacity[NAME] = capacity  # sized by the backfill on the server, not by the shards
        await asyncio.gather(*(shard(n) for n in range(len(busy_s))))

    await clock.run(scenario())
    assert len(spans) == len(busy_s) and not server.active(NAME)  # every turn was given back
    # whenever one shard ended, a waiting one began within a poll (0.5 s) plus a round trip
    ends = sorted(end for _, end in spans)[:-capacity]
    starts = sorted(start for start, _ in spans)[capacity:]
    assert all(0 <= s - e <= 0.6 for e, s in zip(ends, starts, strict=True)), (ends, starts)


async def test_a_held_turn_is_renewed_while_its_shard_sends_and_a_killed_shards_turn_lapses_back():
    clock = FakeClock()
    server = FakeLeases(clock)
    async def scenario():
        held = Turn(server, NAME, sleep=clock.sleep)
        await held.__aenter__()
        await clock.sleep(LEASE_S * 3)  # a long shard: its lease must outlive LEASE_S
        assert server.active(NAME) == 1 and server.renewals >= 5
        await held.__aexit__(None, None, None)
        assert server.active(NAME) == 0

        killed = Turn(server, NAME, sleep=clock.sleep)
        await killed.__aenter__()
        assert killed._renewer is not None
        killed._renewer.cancel()  # the process is gone: nobody renews, nobody releases
        t0 = clock.now
        async with Turn(server, NAME, sleep=clock.sleep):
            waited = clock.now - t0
        return waited

    waited = await clock.run(scenario())
    assert LEASE_S - 1 <= waited <= LEASE_S + 1, waited


async def test_turns_that_no_longer_exist_let_the_shard_send():
    class Gone(FakeLeases):
        async def acquire(self, limit, slots, lease_s):
            raise ConfigError(f"global concurrency limit {limit.name!r} does not exist")

    clock = FakeClock()

    async def scenario():
        async with Turn(Gone(clock), NAME, sleep=clock.sleep) as turn:
            return turn.lease_id

    assert await clock.run(scenario()) is None
