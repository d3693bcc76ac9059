"""Claims and run records: one run holds a video at a time; a claim of a run over before this one started is
taken over; one of many racing creates wins, locally and on S3 (moto's If-None-Match)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from tasks.config.run import OutputConfig
from tasks.record.claims import CLAIMS, RUNS, Claims, RunRecord, RunRegistry, run_alive
from tasks.record.tables import now_utc

KEYS = [f"{i:02x}" + "ab" * 31 for i in range(12)]


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return OutputConfig(url=str(tmp_path / "out"))
    fs, endpoint = request.getfixturevalue("s3")
    fs.mkdir("ledgers")
    return OutputConfig(url="s3://ledgers/out", storage_options={"endpoint_url": endpoint})


def registry(output, run_id, job="job"):
    r = RunRegistry(output, run_id, job, heartbeat_s=3600)
    r.start()
    return r


def test_a_live_runs_claims_bind_a_second_run_and_name_it(output):
    a, b = registry(output, "run-a"), registry(output, "run-b")
    assert Claims(a).claim(KEYS[:8]) == {}
    held = Claims(b).claim(KEYS[4:])
    assert sorted(held) == KEYS[4:8]
    assert {h.run_id for h in held.values()} == {"run-a"} and "pid" in held[KEYS[4]].describe()
    assert Claims(a).claim(KEYS[:8]) == {}  # its own claims hold for it again (a retried batch)
    a.stop(), b.stop()


def test_a_claim_of_a_run_that_ended_after_this_one_started_is_respected(output):
    a, b = registry(output, "run-a"), registry(output, "run-b")
    Claims(a).claim(KEYS[:2])
    a.end()  # b read its state before a's rows landed: a may have finished them
    assert sorted(Claims(b).claim(KEYS[:2])) == KEYS[:2]
    b.stop()


def test_a_claim_of_a_run_over_before_this_one_started_is_taken_over_by_one_run(output):
    a = registry(output, "run-a")
    Claims(a).claim(KEYS[:3])
    a.end()
    b, c = registry(output, "run-b"), registry(output, "run-c")
    assert Claims(b).claim(KEYS[:3]) == {}  # a's rows were in the state b read: b decides, b holds them now
    held = Claims(c).claim(KEYS[:3])
    assert {h.run_id for h in held.values()} == {"run-b"} and len(held) == 3
    fs, root = b.fs, b.root
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/{CLAIMS}/{KEYS[0][:2]}/{KEYS[0]}", detail=False))
    assert names == ["0", "1"]
    b.end()
    e = registry(output, "run-e")
    assert Claims(e).claim(KEYS[:1]) == {}  # the next generation again; the one it superseded is removed
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/{CLAIMS}/{KEYS[0][:2]}/{KEYS[0]}", detail=False))
    assert names == ["0", "2"]
    c.stop(), e.stop()


def test_a_dead_runs_claims_are_stale_for_the_next_run(output):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    a = registry(output, "run-a")
    Claims(a).claim(KEYS[:2])
    a.stop()
    a.fs.pipe_file(f"{a.dir}/run-a.json", RunRecord(**{**a.record.__dict__, "pid": int(dead.stdout)}).to_json())
    assert run_alive(output, "run-a") is False
    b = registry(output, "run-b")
    assert "run-a" in b.over_at_start and Claims(b).claim(KEYS[:2]) == {}
    b.stop()


def test_another_hosts_run_is_dead_when_its_heartbeat_stopped(output):
    a = registry(output, "run-a")
    a.stop()
    old = now_utc() - timedelta(seconds=600)
    a.fs.pipe_file(f"{a.dir}/run-a.json", RunRecord("run-a", "job", "elsewhere", 1, old, old).to_json())
    assert run_alive(output, "run-a") is False
    fresh = now_utc()
    a.fs.pipe_file(f"{a.dir}/run-a.json", RunRecord("run-a", "job", "elsewhere", 1, fresh, fresh).to_json())
    assert run_alive(output, "run-a") is True


def test_of_many_runs_racing_for_one_key_exactly_one_holds_it(output):
    runs = [registry(output, f"run-{i}") for i in range(6)]
    barrier, won = threading.Barrier(len(runs)), []

    def race(r):
        barrier.wait()
        if Claims(r).claim(KEYS[:1]) == {}:
            won.append(r.run_id)

    threads = [threading.Thread(target=race, args=(r,)) for r in runs]
    [t.start() for t in threads], [t.join() for t in threads]
    assert len(won) == 1
    for r in runs:
        r.stop()


def test_records_of_runs_over_before_every_live_run_started_are_removed(output):
    a = registry(output, "run-a")
    Claims(a).claim(KEYS[:1])
    a.end()
    long_ago = now_utc() - timedelta(hours=2)
    a.fs.pipe_file(f"{a.dir}/run-a.json", RunRecord("run-a", "job", "h", 1, long_ago, long_ago, long_ago).to_json())
    a.fs.pipe_file(f"{a.dir}/run-old-live.json", json.dumps({
        "run_id": "run-old-live", "job": "job", "host": "elsewhere", "pid": 1,
        "started_at": (now_utc() - timedelta(hours=3)).isoformat(), "updated_at": now_utc().isoformat(),
        "ended_at": None}).encode())
    live = registry(output, "run-live")  # run-old-live started before run-a ended: run-a's record stays
    b = registry(output, "run-b")
    assert live.fs.exists(f"{live.root}/{RUNS}/run-a.json")
    live.fs.rm(f"{live.dir}/run-old-live.json")
    c = registry(output, "run-c")
    assert not c.fs.exists(f"{c.root}/{RUNS}/run-a.json")  # a's claims bind no live run any more
    assert Claims(c).claim(KEYS[:1]) == {}  # a claim whose run's record is gone is stale
    for r in (live, b, c):
        r.stop()
