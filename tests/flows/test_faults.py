"""Transient faults, an exhausted quota and a failing provider, end to end: moto S3, localapi over HTTP, Prefect."""

from __future__ import annotations

import asyncio

import pytest

from flows.summarize import summarize
from tasks.config.load import load_config
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket, video

pytestmark = pytest.mark.usefixtures("prefect_harness")

CLIP = video("mp4", seconds=2, audio=False)


def run(config, **kw):
    return asyncio.run(summarize(config=str(config), **kw))


def ledger(config):
    return read_ledger(load_config(config).output)


def seed(s3, n):
    fs, _ = s3
    seed_bucket(fs, "videos", {f"clip{i:02d}.mp4": CLIP for i in range(n)})


def test_every_kind_of_transient_fault_survived_without_duplicates(s3, localapi, make_config):
    seed(s3, 8)
    kinds = ["500", "502", "502html", "503", "504", "drop", "stall", "malformed", "429"]
    localapi.config.script.extend(kinds)
    localapi.config.stall_s, localapi.config.retry_after_s = 5.0, 1
    config = make_config(localapi, timeout_s=1.5, max_attempts=6, limits={"concurrency": 2})
    result = run(config)
    df = ledger(config)
    assert (result["ok"], result["error"]) == (8, 0) and (df.status == "ok").all()
    assert len(df) == df.request_key.nunique() == 8                     # no duplicates, nothing lost
    assert int(df.attempts.sum()) == 8 + len(kinds)                     # one extra attempt per fault
    assert localapi.config.script == []                                 # every fault was served
    assert localapi.stats()["faults"] == {k: 1 for k in kinds if k != "stall"}  # the stall is still sleeping


def test_retry_delay_in_the_429_body_is_honoured(s3, localapi, make_config):
    seed(s3, 1)
    localapi.config.retry_after_in, localapi.config.retry_after_s = "body", 1
    localapi.config.script.append("429")
    config = make_config(localapi)
    assert run(config)["ok"] == 1
    assert ledger(config).attempts.tolist() == [2]
    assert localapi.stats()["by_status"] == {"429": 1, "200": 1}


def test_a_provider_that_keeps_failing_stops_the_run_and_the_next_run_picks_up(s3, localapi, make_config):
    seed(s3, 6)
    localapi.config.faults = {"503": 1.0}
    config = make_config(localapi, max_attempts=2, breaker_failures=4, breaker_window_s=0, limits={"concurrency": 1})
    result = run(config)
    df = ledger(config)
    assert (result["ok"], result["error"]) == (0, 6) and len(df) == 6
    assert set(df.error_type) <= {"server", "not_attempted"} and df.attempts.sum() == 4
    assert (df[df.attempts == 0].error_type == "not_attempted").all() and (df.error_type == "not_attempted").sum() >= 2
    assert localapi.stats()["requests"] == 4                            # nothing sent once the breaker opened
    message = df[df.error_type == "not_attempted"].error_message.iloc[0]
    assert message.startswith("not sent: the run stopped sending after 4 failed attempts in a row")
    not_attempted = set(df[df.error_type == "not_attempted"].request_key)

    localapi.config.faults = {}
    run(config)
    again = ledger(config)
    finished = set(again[again.status == "ok"].request_key)
    assert not_attempted <= finished                                    # the next run sent every one of them


def test_an_exhausted_daily_quota_fails_fast(s3, localapi, make_config):
    seed(s3, 5)
    localapi.config.daily_quota = 2
    config = make_config(localapi, max_attempts=6, limits={"concurrency": 1})
    result = run(config)
    df = ledger(config)
    assert (result["ok"], result["error"]) == (2, 3)
    assert sorted(zip(df.error_type.fillna("ok"), df.attempts, strict=True)) == [
        ("not_attempted", 0), ("not_attempted", 0), ("ok", 1), ("ok", 1), ("quota_exhausted", 1)]  # no retries
    assert localapi.stats()["requests"] == 3
    not_attempted = set(df[df.error_type.isin(["not_attempted", "quota_exhausted"])].request_key)

    localapi.reset()                                                    # a new day
    localapi.config.daily_quota = 3
    run(config)
    again = ledger(config)
    assert len(not_attempted) == 3 and not_attempted <= set(again[again.status == "ok"].request_key)  # the one the
    assert localapi.stats()["requests"] == 3                            # quota stopped at is sent again too
