"""The detached return of a finished run's leases: at their wall-clock times, whenever its process got going."""

from __future__ import annotations

import json
import time

import flows.prefect.shared_limits as shared_limits
from flows.prefect.release_later import release_at


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
