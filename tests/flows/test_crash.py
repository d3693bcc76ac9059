"""SIGKILL the CLI at random points of a run, rerun it, and check nothing is lost, doubled or torn."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.config.load import load_config
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket, video
from tests.flows.conftest import start_run

pytestmark = pytest.mark.usefixtures("prefect_harness")
CONCURRENCY, VIDEOS = 3, 14


def start(config):
    return start_run(config, stdout=subprocess.DEVNULL, start_new_session=True)


def kill_after(proc, api, answers: int, extra_s: float) -> None:
    """SIGKILL once localapi has answered `answers` more requests, plus a random fraction of a request."""
    target = api.stats()["ok"] + answers
    deadline = time.monotonic() + 120
    while api.stats()["ok"] < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(extra_s)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_and_rerun_nothing_lost_at_most_in_flight_paid_twice(s3, localapi, make_config, seed):
    rng = random.Random(seed)
    fs, _ = s3
    seed_bucket(fs, "videos", {f"cam/{i:02d}.mp4": video("mp4", seconds=2, audio=bool(i % 2)) for i in range(VIDEOS)})
    localapi.config.latency = (0.1, 0.4)
    config = make_config(localapi, limits={"concurrency": CONCURRENCY})
    cfg = yaml.safe_load(config.read_text())
    cfg["output"].update(batch_size=5, flush_rows=4, flush_seconds=30)
    config.write_text(yaml.safe_dump(cfg))
    kills = 2 if seed == 3 else 1
    for _ in range(kills):
        kill_after(start(config), localapi, rng.randint(1, VIDEOS // 2), rng.uniform(0, 0.3))
    final = start(config)
    _, err = final.communicate(timeout=240)
    assert final.returncode == 0, err[-3000:]

    df = read_ledger(load_config(config).output)
    latest = df.sort_values("created_at").groupby("request_key").tail(1)
    assert len(latest) == VIDEOS and (latest.status == "ok").all()          # every video ends ok
    ok = df[df.status == "ok"]
    assert len(ok) == ok.request_key.nunique() == VIDEOS                      # ...exactly once
    for f in Path(cfg["output"]["url"]).rglob("*.parquet"):
        pq.read_table(f)                                                      # every file whole
    answered = localapi.stats()["keys"]
    twice = sum(1 for n in answered.values() if n > 1)
    recovered = df.run_id.nunique()
    print(f"seed {seed}: {kills} kill(s), {twice} answered twice, {len(df)} rows from {recovered} runs")
    assert len(answered) == VIDEOS and twice <= CONCURRENCY * kills, answered  # paid again: in flight only


def test_what_a_killed_run_left_in_scratch_and_partial_is_removed_by_the_next_run(s3, localapi, make_config):
    import asyncio

    from flows.summarize import summarize
    from tasks.record.claims import RUNS, RunRecord
    from tasks.record.tables import PARTIAL, now_utc

    fs, endpoint = s3
    seed_bucket(fs, "videos", {"cam/a.mp4": video("mp4", seconds=1)})
    config = make_config(localapi)
    cfg = yaml.safe_load(config.read_text())
    cfg["media"] = {"scratch_url": "s3://videos/_scratch", "scratch_storage_options": {"endpoint_url": endpoint}}
    config.write_text(yaml.safe_dump(cfg))
    root = Path(load_config(config).output.url)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (root / RUNS).mkdir(parents=True)
    now = now_utc()
    for run_id, pid in (("run-killed", int(gone.stdout)), ("run-alive", os.getpid())):
        (root / RUNS / f"{run_id}.json").write_bytes(RunRecord(run_id, "j", socket.gethostname(), pid, now,
                                                               now).to_json())
        fs.pipe_file(f"videos/_scratch/{run_id}/{'ab' * 32}.mp4", b"a cut segment")
        (root / PARTIAL / run_id).mkdir(parents=True)
        (root / PARTIAL / run_id / ".2026-12-01.parquet.x1.partial").write_bytes(b"")  # a disk-full crash left it
    fs.pipe_file("videos/_scratch/run-unknown/old.mp4", b"a run whose record is gone long ago")
    result = asyncio.run(summarize(config=str(config)))
    assert result["ok"] == 1 and result["error"] == 0  # the scratch objects were never taken for source videos
    left = sorted(p.split("/")[2] for p in fs.find("videos/_scratch"))
    assert left == ["run-alive"]
    assert sorted(p.name for p in (root / PARTIAL).iterdir()) == ["run-alive"]
