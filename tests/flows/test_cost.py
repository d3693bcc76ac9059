"""Money end to end on real servers (moto S3, localapi over HTTP, Prefect's test harness): the ledger's cost,
the dry-run bill against the actual one, a budget that is never crossed, and media.audio drop."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from flows.summarize import summarize
from tasks.config.load import load_config
from tasks.errors import ConfigError
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket, video

pytestmark = pytest.mark.usefixtures("prefect_harness")

PRICES = {"currency": "XTS", "per_million": {"text": 1.5, "video": 1.0, "audio": 3.0, "cached": 0.25,
                                              "output": 4.0}}
VIDEOS = {
    "cam01/a.mp4": video("mp4", seconds=4, audio=True),
    "cam01/b.webm": video("webm", seconds=3, audio=False),
    "cam02/c.mov": video("mov", seconds=5, audio=True),
}
MANY = {f"many/v{i:02d}.mp4": video("mp4", seconds=2 + i % 3, audio=True) for i in range(16)}


def run(config, **kw):
    return asyncio.run(summarize(config=str(config), **kw))


def ledger(config):
    return read_ledger(load_config(config).output)


def per_million(tokens: int, price: float) -> Decimal:
    return Decimal(int(tokens)) * Decimal(str(price)) / Decimal(1_000_000)


def test_ledger_cost_is_the_reported_usage_at_the_profile_prices(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    config = make_config(localapi, prices=PRICES)
    result = run(config)
    assert result["ok"] == 3 and result["currency"] == "XTS"
    df = ledger(config)
    pm = PRICES["per_million"]
    for r in df.itertuples():
        usage = json.loads(r.usage_json)
        details = usage["prompt_tokens_details"]
        assert (r.prompt_text_tokens, r.prompt_video_tokens, r.prompt_audio_tokens, r.cached_prompt_tokens) == (
            details["text_tokens"], details["video_tokens"], details["audio_tokens"], 0)
        assert r.prompt_text_tokens + r.prompt_video_tokens + r.prompt_audio_tokens == r.prompt_tokens
        assert (r.prompt_audio_tokens > 0) == bool(r.has_audio) and r.reasoning_tokens == 0
        # the reported split agrees with the estimate's (frames and timestamps are video)
        assert r.prompt_video_tokens == r.estimated_frame_tokens + r.estimated_timestamp_tokens
        assert r.prompt_audio_tokens == r.estimated_audio_tokens and r.prompt_text_tokens == r.estimated_text_tokens
        expected = (per_million(r.prompt_text_tokens, pm["text"]) + per_million(r.prompt_video_tokens, pm["video"])
                    + per_million(r.prompt_audio_tokens, pm["audio"])
                    + per_million(r.completion_tokens, pm["output"]))
        assert r.computed_cost == r.cost == float(expected) and pd_isna(r.gateway_cost) and r.currency == "XTS"
    assert result["cost"] == pytest.approx(df.cost.sum())


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def test_a_gateways_own_cost_wins_and_both_are_kept(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    localapi.config.cost_per_million = {"text": 2.0, "video": 2.0, "audio": 2.0, "output": 2.0}
    config = make_config(localapi, prices=PRICES)
    assert run(config)["ok"] == 3
    for r in ledger(config).itertuples():
        gateway = json.loads(r.usage_json)["cost"]
        assert r.gateway_cost == r.cost == gateway == pytest.approx(r.total_tokens * 2e-6)
        assert r.computed_cost != r.cost and r.computed_cost > 0


def test_without_prices_the_cost_columns_are_null_and_the_run_says_so(s3, localapi, make_config, caplog):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    config = make_config(localapi)
    result = run(config)
    assert result["ok"] == 3 and result["currency"] is None
    df = ledger(config)
    assert df.cost.isna().all() and df.estimated_cost.isna().all() and df.prompt_video_tokens.notna().all()
    said = [r for r in caplog.records if "has no prices" in r.getMessage()]
    assert len(said) == 1 and "cost columns are null" in said[0].getMessage()


def test_the_dry_run_bill_is_within_5_percent_of_the_actual_bill(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {**VIDEOS, **MANY})
    config = make_config(localapi, prices=PRICES)
    first = run(config, limit=3)  # earlier answers: the expected output of a request
    assert first["ok"] == 3
    bill = run(config, dry_run=True)
    planned = [p for p in bill["planned"] if not p["error"]]
    assert len(planned) == len(VIDEOS) + len(MANY) - 3
    estimate = sum(p["estimated_cost"] for p in planned)
    assert estimate == pytest.approx(sum(sum(p["cost_parts"].values()) for p in planned))
    actual = run(config)
    assert actual["ok"] == len(planned)
    df = ledger(config)
    spent = df[df.run_id == actual["run_id"]].cost.sum()
    assert abs(estimate - spent) / spent < 0.05, (estimate, spent)


def test_a_budget_run_never_spends_more_than_the_budget_and_the_next_run_finishes(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", MANY)
    config = make_config(localapi, prices=PRICES, limits={"concurrency": 8}, budget={"output_tokens": 100})
    localapi.config.latency = (0.05, 0.2)
    budget = 0.01  # about half of the 16 videos
    result = run(config, budget=budget)
    df = ledger(config)
    sent = df[df.status == "ok"]
    undone = df[df.error_type == "budget"]
    assert len(sent) + len(undone) == 16 and 0 < len(sent) < 16
    assert sent.cost.sum() <= budget and result["spent"] == pytest.approx(sent.cost.sum())
    assert result["budget_not_sent"] == len(undone) and localapi.stats()["requests"] == len(sent)
    assert undone.error_message.str.contains("no longer fits the budget").all()
    assert result["budget"] == budget
    again = run(config)
    assert again["ok"] == len(undone) and again["budget_not_sent"] == 0
    latest = ledger(config).sort_values("created_at").groupby("request_key").tail(1)
    assert (latest.status == "ok").all() and len(latest) == 16


def test_a_budget_below_one_requests_reservation_is_an_error_before_anything_is_sent(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    config = make_config(localapi, prices=PRICES, budget={"output_tokens": 100})
    with pytest.raises(ConfigError, match=r"budget 0.0001 is below a single request's reservation: s3://videos/"
                                          r"\S+ reserves 0\.00\d+"):
        run(config, budget=0.0001)
    assert localapi.stats()["requests"] == 0


def test_audio_drop_sends_videos_without_an_audio_stream(s3, localapi, make_config, tmp_path):
    import yaml

    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    config = make_config(localapi, "gdc", prices=PRICES)
    raw = yaml.safe_load(config.read_text())
    raw["media"] = {"audio": "drop"}
    config.write_text(yaml.safe_dump(raw))
    bill = run(config, dry_run=True)
    assert all(p["cost_parts"]["audio"] == 0 for p in bill["planned"])
    assert run(config)["ok"] == 3
    df = ledger(config)
    with_audio = df[df.has_audio.astype(bool)]
    assert len(with_audio) == 2 and (with_audio.media_ops == "drop_audio").all()
    assert (df.prompt_audio_tokens == 0).all() and (df.estimated_audio_tokens == 0).all()
    assert (df.prompt_tokens == df.estimated_prompt_tokens).all()
    assert all("no audio" in t for t in df.output_text)  # localapi decoded what it was sent
