"""Two runs of one config at once pay for each video once: the second takes only what the first has not claimed."""

from __future__ import annotations

import time

import pytest

from tasks.config.load import load_config
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket, video
from tests.flows.conftest import start_run

pytestmark = pytest.mark.usefixtures("prefect_harness")
VIDEOS = 100


def start(config):
    return start_run(config)


def test_two_runs_of_one_config_at_once_send_each_video_once(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {f"cam/{i:03d}.mp4": video("mp4", seconds=1) for i in range(VIDEOS)})
    localapi.config.latency = (0.5, 0.7)  # ~30 s of sending at concurrency 2: the runs overlap even when the
    config = make_config(localapi, limits={"concurrency": 2})  # second one's start-up is slow (a loaded machine)
    first = start(config)
    deadline = time.monotonic() + 120  # the issue started the second 1.5 s after the first; here, once the
    while localapi.stats()["ok"] < 3:  # first is sending, so a slow start of the first cannot make them meet late
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = start(config)
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0, err1[-3000:]
    assert second.returncode == 0, err2[-3000:]
    stats = localapi.stats()
    assert stats["requests"] == VIDEOS  # the issue saw 190
    df = read_ledger(load_config(config).output)
    assert len(df) == VIDEOS == df.request_key.nunique() == df.source_uri.nunique()
    assert set(df.status) == {"ok"}
    # the second run said what it left to the first, naming it (the first may also have met the second's claims)
    assert "claimed by run" in err2 and f"pid {first.pid}" in err2, err2[-3000:]
    assert "skipped_claimed_elsewhere" in out2
    assert df.run_id.nunique() == 2  # both did a share of the work

    third = start(config)
    out3, err3 = third.communicate(timeout=300)
    assert third.returncode == 0, err3[-3000:]
    assert localapi.stats()["requests"] == VIDEOS  # nothing left, nothing sent again
