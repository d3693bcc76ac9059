"""Issue 15: runs that stop on refused credentials or a spent quota leave their items to the next run; secrets never
reach a row, a log line or a message."""

from __future__ import annotations

import asyncio
import logging

import pytest

from flows.summarize import summarize
from tasks.config.load import load_config
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket, video
from tests.flows.conftest import API_KEY, all_logs

pytestmark = pytest.mark.usefixtures("prefect_harness")

CLIP = video("mp4", seconds=2, audio=False)
SIX = {f"cam/{i}.mp4": CLIP for i in range(6)}


def run(config, **kw):
    return asyncio.run(summarize(config=str(config), **kw))


def latest(config):
    df = read_ledger(load_config(config).output).sort_values("created_at")
    return df.groupby("source_uri").tail(1).set_index("source_uri")


@pytest.mark.parametrize("rerun", [{}, {"retry_failed": True}])
def test_wrong_key_stops_the_run_and_the_right_key_then_finishes_every_video(s3, localapi, make_config, monkeypatch,
                                                                             rerun):
    fs, _ = s3
    seed_bucket(fs, "videos", SIX)
    config = make_config(localapi, limits={"concurrency": 1})
    monkeypatch.setenv("VB_TEST_KEY", "sk-wrong-key-0000")
    first = run(config)
    assert localapi.stats()["requests"] == 1  # the first 401 stops the run
    rows = latest(config)
    assert len(rows) == 6 and (rows.status == "error").all()
    assert sorted(rows.error_type) == ["auth"] + ["not_attempted"] * 5 and first["error"] == 6
    monkeypatch.setenv("VB_TEST_KEY", API_KEY)
    second = run(config, **rerun)
    assert (second["ok"], second["error"]) == (6, 0)
    assert (latest(config).status == "ok").all()


@pytest.mark.parametrize("rerun", [{}, {"retry_failed": True}])
def test_an_exhausted_quota_leaves_the_video_it_hit_to_the_next_run(s3, localapi, make_config, rerun):
    fs, _ = s3
    seed_bucket(fs, "videos", SIX)
    config = make_config(localapi, limits={"concurrency": 1})
    localapi.config.daily_quota = 2
    run(config)
    assert sorted(latest(config).error_type.fillna("ok")) == ["not_attempted"] * 3 + ["ok"] * 2 + ["quota_exhausted"]
    localapi.reset()  # the next day
    localapi.config.daily_quota = None
    second = run(config, **rerun)
    assert (second["ok"], second["error"]) == (4, 0) and (latest(config).status == "ok").all()


def test_a_key_echoed_by_the_provider_reaches_no_row_log_or_message(s3, localapi, make_config, monkeypatch, caplog):
    fs, _ = s3
    seed_bucket(fs, "videos", {"one.mp4": CLIP, "two.mp4": CLIP})
    wrong = "sk-live-ECHOED-4a7f9e21c3"
    localapi.config.echo_key = True
    config = make_config(localapi, extra_body={"api_key": "sk-in-extra-body-99f1", "metadata": {"team": "ops"}})
    monkeypatch.setenv("VB_TEST_KEY", wrong)
    with caplog.at_level(logging.DEBUG):
        run(config)
        logging.getLogger("tasks.call.client").warning("after the run: %s", f"key {wrong}")
    df = read_ledger(load_config(config).output)
    assert len(df) == 2 and "auth" in set(df.error_type)
    auth = df[df.error_type == "auth"].iloc[0]
    assert "Incorrect API key provided: <redacted>" in auth.error_message  # localapi did echo it
    for column in df.columns:
        text = " ".join(map(str, df[column].tolist()))
        assert wrong not in text and "sk-in-extra-body" not in text, column
    assert '"api_key": "<redacted>"' in auth.request_params and '"team": "ops"' in auth.request_params
    logged = [r.getMessage() for r in caplog.records] + [entry["message"] for entry in all_logs()]
    assert any("<redacted>" in m for m in logged) and not any(wrong in m for m in logged)


def test_zero_byte_objects_get_a_skipped_row_once_and_keep_their_count(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {"a.mp4": CLIP, "zero.mp4": b"", "deep/also-zero.webm": b"", "notes.txt": b""})
    config = make_config(localapi)
    first = run(config)
    assert (first["ok"], first["error"], first["skipped_empty"]) == (1, 0, 2)
    df = read_ledger(load_config(config).output)
    empty = df[df.error_type == "empty"].set_index("source_uri")
    assert set(empty.index) == {"s3://videos/zero.mp4", "s3://videos/deep/also-zero.webm"}
    assert (empty.status == "skipped").all() and (empty.attempts == 0).all()
    assert all(uri in m and "zero-byte" in m for uri, m in empty.error_message.items())
    assert len(df) == 3 and localapi.stats()["requests"] == 1  # every video object listed has its row; none sent
    second = run(config)
    assert second["skipped_empty"] == 2 and len(read_ledger(load_config(config).output)) == 3


def test_credentials_in_the_source_url_are_used_and_never_shown(s3, localapi, make_config):
    import json

    import yaml

    from tasks.errors import SourceError
    from tests.flows.conftest import artifacts

    fs, _ = s3
    seed_bucket(fs, "videos", {"one.mp4": CLIP})
    config = make_config(localapi)
    cfg = yaml.safe_load(config.read_text())
    cfg["source"]["url"] = "s3://AKIAURLKEY0001:SeCrEtInUrl%2F99@videos/"
    config.write_text(yaml.safe_dump(cfg))
    assert run(config)["ok"] == 1
    df = read_ledger(load_config(config).output)
    assert df.source_uri.tolist() == ["s3://videos/one.mp4"]
    cfg["source"]["url"] = "s3://AKIAURLKEY0001:SeCrEtInUrl%2F99@no-such-bucket/"
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SourceError) as e:
        run(config)
    shown = " ".join([str(e.value), json.dumps(artifacts()), *(entry["message"] for entry in all_logs())])
    assert "no-such-bucket" in str(e.value)
    for secret in ("AKIAURLKEY0001", "SeCrEtInUrl"):
        assert secret not in shown and secret not in " ".join(map(str, df.to_dict("records")))
