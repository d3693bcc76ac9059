"""Provider media limits end to end: packing, MIME lists, segmentation, shrinking, token estimates."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from flows.summarize import summarize
from tasks.config.load import load_config
from tasks.errors import ConfigError
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket, video

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(config, **kw):
    return asyncio.run(summarize(config=str(config), **kw))


def with_media(config, **media):
    cfg = yaml.safe_load(config.read_text())
    cfg["media"] = media
    config.write_text(yaml.safe_dump(cfg))
    return config


def test_ten_clips_of_one_camera_hour_go_in_one_gdc_request(s3, localapi, make_config):
    fs, _ = s3
    clips = {f"cam07/2026/11/21/08/clip{i:02d}.mp4": video("mp4", seconds=2, audio=bool(i % 2)) for i in range(10)}
    seed_bucket(fs, "videos", clips)
    config = with_media(make_config(localapi, "gdc"), pack={"max_videos": 10, "group_by": "directory"})
    result = run(config)
    assert result["ok"] == 10
    stats = localapi.stats()
    assert stats["ok"] == 1                                                  # one request...
    parts = stats["last_requests"][-1]["parts"]
    assert sum(p["type"] == "input_video" for p in parts) == 10              # ...holding ten videos
    df = read_ledger(load_config(config).output).sort_values("pack_index")
    assert len(df) == 10 and df.request_id.nunique() == 1 and list(df.pack_index) == list(range(10))
    assert (df.pack_size == 10).all() and set(df.source_uri) == {f"s3://videos/{k}" for k in clips}
    # usage is counted once: on the first row, equal to what localapi reported for the request
    assert df.prompt_tokens.notna().sum() == 1 and df.prompt_tokens.sum() == stats["timeline"][-1][2]
    assert abs(df.estimated_prompt_tokens.sum() - df.prompt_tokens.sum()) <= 0.05 * df.prompt_tokens.sum()


def test_eleven_per_request_is_refused_for_gdc(s3, localapi, make_config):
    config = with_media(make_config(localapi, "gdc"), pack={"max_videos": 11})
    with pytest.raises(ConfigError, match="media.pack.max_videos 11 is over provider .* limit of 10 videos"):
        load_config(config)


def test_container_outside_the_mime_list_refused_with_a_named_reason(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {"a.avi": video("avi", seconds=2), "b.mp4": video("mp4", seconds=2)})
    config = with_media(make_config(localapi, "openai"), transcode=False)
    result = run(config)
    df = read_ledger(load_config(config).output).set_index("source_uri")
    assert (result["ok"], result["error"]) == (1, 1) and localapi.stats()["requests"] == 1
    bad = df.loc["s3://videos/a.avi"]
    assert bad.error_type == "limit" and "video/avi is not accepted" in bad.error_message
    assert "video/mp4, video/mpeg, video/mov, video/webm" in bad.error_message


def durations(df):
    return df.output_text.str.extract(r"duration ([0-9.]+) s")[0].astype(float)


def assert_estimates_hold(df):
    ok = df[df.status == "ok"]
    assert len(ok) and ((ok.estimated_prompt_tokens - ok.prompt_tokens).abs() <= 0.05 * ok.prompt_tokens).all(), \
        ok[["estimated_prompt_tokens", "prompt_tokens"]]


@pytest.mark.parametrize("delivery", ["inline", "presigned"])
def test_five_minute_lecture_cut_into_segments_that_sum_to_the_source(s3, localapi, make_config, delivery):
    fs, endpoint = s3
    seed_bucket(fs, "videos", {"lectures/week1.mp4": video("mp4", seconds=300, audio=True, fps=4, scene_seconds=30)})
    config = make_config(localapi, "gdc", delivery)
    if delivery == "presigned":  # cut copies must be in storage the provider can fetch from
        with_media(config, scratch_url="s3://videos/_scratch", scratch_storage_options={"endpoint_url": endpoint})
    result = run(config)
    df = read_ledger(load_config(config).output).sort_values("segment_index")
    assert result["error"] == 0 and len(df) == result["ok"] >= 4, df.error_message.tolist()[:2]
    assert (df.segment_end_s - df.segment_start_s <= 100).all() and (df.segment_count == len(df)).all()
    assert df.segment_start_s.iloc[0] == 0 and abs(df.segment_end_s.iloc[-1] - 300) < 0.5
    assert (df.segment_start_s.iloc[1:].values == df.segment_end_s.iloc[:-1].values).all()  # absolute, contiguous
    assert abs(durations(df).sum() - 300) < 1.0                  # localapi decoded segments that sum to the source
    assert df.media_ops.str.startswith("cut:").all() and df.request_key.nunique() == len(df)
    assert df.source_key.nunique() == 1
    assert_estimates_hold(df)
    if delivery == "presigned":  # the segment objects were uploaded to scratch, signed, and removed afterwards
        assert not fs.exists("videos/_scratch") and not [p for p in fs.find("videos") if "_scratch" in p]
    again = run(config)                                          # finished: not even probed again
    assert again["ok"] + again["error"] == 0 and again["skipped_already_done"] == 1


def test_silent_119_s_fits_121_s_is_cut_for_gdc(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {"a119.mp4": video("mp4", seconds=119, audio=False, fps=2, scene_seconds=20),
                               "b121.mp4": video("mp4", seconds=121, audio=False, fps=2, scene_seconds=20)})
    config = make_config(localapi, "gdc")
    assert run(config)["ok"] == 3
    df = read_ledger(load_config(config).output)
    counts = df.groupby(df.source_uri.str.rsplit("/", n=1).str[-1]).size().to_dict()
    assert counts == {"a119.mp4": 1, "b121.mp4": 2}
    b = df[df.source_uri.str.endswith("b121.mp4")]
    assert (b.segment_end_s - b.segment_start_s <= 120).all() and abs(durations(b).sum() - 121) < 1.0
    assert_estimates_hold(df)


def test_oversized_file_shrunk_under_trinity_limit(s3, localapi, make_config):
    fs, _ = s3
    big = video("avi", seconds=6, audio=True, width=320, height=240, fps=12)
    seed_bucket(fs, "videos", {"big.mp4": big, "small.mp4": video("mp4", seconds=2)})
    limit = len(big) // 3
    config = make_config(localapi, "trinity", media={"max_bytes_per_video": limit})
    result = run(config)
    df = read_ledger(load_config(config).output).set_index("source_uri")
    assert result["ok"] == 2, df.error_message.tolist()
    assert df.loc["s3://videos/big.mp4"].media_ops == "shrink" and pd_isna(df.loc["s3://videos/small.mp4"].media_ops)
    sizes = {p.get("file_name"): p.get("size") for r in localapi.stats()["last_requests"] for p in r["parts"]}
    assert sizes["big.mp4"] <= limit


def test_nothing_fits_names_the_limit_and_the_measured_size(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {"big.mp4": video("avi", seconds=6, audio=True, width=320, height=240, fps=12)})
    config = make_config(localapi, "trinity", media={"max_bytes_per_video": 2000})
    assert run(config)["error"] == 1
    r = read_ledger(load_config(config).output).iloc[0]
    assert r.error_type in ("media", "limit") and "2,000" in r.error_message or "2000" in r.error_message
    assert localapi.stats()["requests"] == 0


def test_container_outside_the_mime_list_transcoded_to_mp4(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {"a.avi": video("avi", seconds=3), "b.flv": video("flv", seconds=3),
                               "c.wmv": video("wmv", seconds=3)})
    config = make_config(localapi, "openai")
    assert run(config)["ok"] == 3
    df = read_ledger(load_config(config).output)
    assert (df.media_ops == "transcode").all() and (df.mime == "video/mp4").all()
    assert_estimates_hold(df)


def pd_isna(v) -> bool:
    import pandas as pd
    return bool(pd.isna(v))
