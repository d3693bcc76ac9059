"""SIGINT (to the process group, as a terminal sends it) and SIGTERM stop a run within seconds, with its summary."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from tasks.config.load import load_config
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket, video
from tests.flows.conftest import start_run

pytestmark = pytest.mark.usefixtures("prefect_harness")
VIDEOS = 30


def start(config, prefect_home=None):
    return start_run(config, prefect_home=prefect_home, start_new_session=True)


@pytest.mark.parametrize("sig, status, own_server", [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False)] * 2
                         + [(signal.SIGINT, 130, True)])
def test_a_signal_stops_the_run_within_seconds_with_its_summary_and_every_finished_row(s3, localapi, make_config,
                                                                                      tmp_path, sig, status,
                                                                                      own_server):
    """own_server: no PREFECT_API_URL, so the run starts its temporary server as a child; Ctrl-C reaches the whole
    process group, and the server must outlive the run's last calls to it (the issue saw 69-150 s of "All
    connection attempts failed")."""
    fs, _ = s3
    seed_bucket(fs, "videos", {f"cam/{i:02d}.mp4": video("mp4", seconds=1) for i in range(VIDEOS)})
    localapi.config.latency = (0.3, 0.6)
    config = make_config(localapi, limits={"concurrency": 2})
    cfg = yaml.safe_load(config.read_text())
    cfg["output"].update(batch_size=4, flush_rows=100, flush_seconds=300)  # finished rows only in the journal
    config.write_text(yaml.safe_dump(cfg))
    proc = start(config, tmp_path / "prefect-home" if own_server else None)
    deadline = time.monotonic() + 240  # a temporary server builds its database first
    while localapi.stats()["ok"] < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=10)  # a generous bound, as behaviour: the run ends before it
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"still running 10 s after {sig.name}: {err[-2000:]}")
    assert proc.returncode == status, err[-3000:]
    assert "summary:" in out and f"stopped by {sig.name}" in err
    assert "All connection attempts failed" not in err and "Error logging to API" not in err, err[-3000:]
    answered = localapi.stats()["ok"]
    df = read_ledger(load_config(config).output)
    assert answered < VIDEOS and len(df) == df.request_key.nunique()
    sent_ok = int(out.split("  ok", 1)[1].split()[0])
    # every row the summary counts is in the ledger. The server counts an answer when it sends it; the
    # run may be stopped before that answer arrives, so only the answers that freed a slot for a third
    # request (concurrency 2) are sure to have been received: at least one.
    assert len(df[df.status == "ok"]) == sent_ok >= 1
