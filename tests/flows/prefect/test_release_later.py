"""The detached return of a finished run's leases: at their wall-clock times, whenever its process got going."""

from __future__ import annotations

import json
import time

import flows.prefect.shared_limits as shared_limits
from flows.prefect.release_later import release_at
from tasks.call.shared_pacing import Bucket, SharedLimit


async def test_leases_go_back_at_their_deadlines_not_a_start_up_later_and_one_failure_stops_none():
    now = [1003.0]  # the process got going 3 s after the hand-off at 1000
    slept: list[float] = []
    released: list[str] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    async def release(lease_id: str) -> None:
        if lease_id == "gone":
            raise RuntimeError("lease not found")  # expired on the server already
        released.append(lease_id)

    done = await release_at({"b": 1010.0, "a": 1002.0, "gone": 1005.0, "c": 1010.5}, release, lambda: now[0], sleep)
    assert done == released == ["a", "b", "c"]
    assert slept == [0.0, 2.0, 5.0, 0.5]  # "a" was due before the start: at once; "b" at 1010, not 1013


def test_the_hand_off_passes_wall_clock_deadlines(monkeypatch):
    started: list[list[str]] = []
    monkeypatch.setattr(shared_limits.subprocess, "Popen", lambda args, **kw: started.append(args))
    before = time.time()
    shared_limits.release_later({"x": 30.0, "y": 61.0})
    after = time.time()
    (args,) = started
    assert args[1:3] == ["-m", "flows.prefect.release_later"]
    deadlines = json.loads(args[3])
    assert before + 30.0 <= deadlines["x"] <= after + 30.0 and before + 61.0 <= deadlines["y"] <= after + 61.0
    shared_limits.release_later({})
    assert len(started) == 1  # nothing pending: no process


class Leases:
    """A lease server with room for everything; ids name their limit."""

    def __init__(self):
        self.n = 0

    async def free(self, limit):
        return limit.capacity

    async def acquire(self, limit, slots, lease_s):
        self.n += 1
        return f"{limit.name}-{self.n}"

    async def renew(self, lease_id, lease_s):
        pass

    async def release(self, lease_id):
        raise AssertionError("a finished run's returns are handed off, not awaited")


class Client:
    async def __aexit__(self, *exc):
        pass


async def test_the_last_returns_of_both_limits_go_to_one_process(monkeypatch):
    """A shard's end is a burst of work on its machine; a Python importing Prefect per limit made it longer."""
    started: list[list[str]] = []
    monkeypatch.setattr(shared_limits.subprocess, "Popen", lambda args, **kw: started.append(args))
    server = Leases()
    permits = shared_limits.SharedPermits(Client(), Bucket(SharedLimit("rpm", 10), server),
                                          Bucket(SharedLimit("tpm", 1000), server))
    held = await permits.take(100)
    permits.finish(held)
    await permits.close()
    (args,) = started
    deadlines = json.loads(args[3])
    assert set(deadlines) == {"rpm-1", "tpm-2"} and all(d > time.time() + 50 for d in deadlines.values())
