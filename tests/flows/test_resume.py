"""Resumable runs: failures retried on request, --force, the nightly watermark."""

from __future__ import annotations

import asyncio
import time

import pytest
import yaml

from flows.summarize import summarize
from tasks.config.load import load_config
from tasks.record.ledger import latest_state, read_ledger
from tasks.record.watermark import read_watermark
from tests.conftest import seed_bucket, video

pytestmark = pytest.mark.usefixtures("prefect_harness")
CLIP = video("mp4", seconds=2, audio=True)


def run(config, **kw):
    return asyncio.run(summarize(config=str(config), **kw))


def sent_keys(api) -> int:
    return sum(api.stats()["keys"].values())


def test_retry_failed_and_all_errors(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {f"c{i}.mp4": CLIP for i in range(3)} | {"bad.mp4": b"not a video" * 40})
    config = make_config(localapi, max_attempts=1, limits={"concurrency": 1})
    localapi.config.script.extend(["503"])                  # one item ends in a retryable error
    first = run(config)
    assert (first["ok"], first["error"]) == (2, 2)
    before = localapi.stats()["requests"]
    again = run(config)                                     # a plain rerun: errors are finished items
    assert (again["ok"], again["error"], again["skipped_already_done"]) == (0, 0, 4)
    assert localapi.stats()["requests"] == before
    retry = run(config, retry_failed=True)                  # the 503 goes again, the undecodable file does not
    assert (retry["ok"], retry["error"], retry["skipped_already_done"]) == (1, 0, 3)
    every = run(config, all_errors=True)                    # now the media error too (and fails again)
    assert (every["ok"], every["error"]) == (0, 1)
    cfg = load_config(config)
    state = latest_state(cfg.output)
    assert sorted(st.status for st in state.values()) == ["error", "ok", "ok", "ok"]
    df = read_ledger(cfg.output)
    assert len(df) == 6 and (df.groupby("request_key").status.apply(lambda s: (s == "ok").sum()) <= 1).all()


def test_force_recomputes_everything_latest_row_wins(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {f"c{i}.mp4": CLIP for i in range(3)})
    config = make_config(localapi)
    run(config)
    forced = run(config, force=True)
    assert forced["ok"] == 3 and forced["skipped_already_done"] == 0
    df = read_ledger(load_config(config).output)
    assert len(df) == 6 and df.request_key.nunique() == 3 and localapi.stats()["ok"] == 6


def test_watermark_catches_up_a_missed_night_and_reuploads(s3, localapi, make_config, tmp_path):
    fs, _ = s3
    config = make_config(localapi)
    cfg = yaml.safe_load(config.read_text())
    cfg["output"]["watermark_overlap_s"] = 1           # S3 mtimes have 1 s resolution; real jobs keep 300 s
    config.write_text(yaml.safe_dump(cfg))
    seed_bucket(fs, "videos", {"day1/a.mp4": CLIP, "day1/b.mp4": CLIP})
    time.sleep(1.2)                                         # day 1's uploads lie wholly before night 1's overlap
    night1 = run(config, incremental=True)
    assert night1["ok"] == 2 and night1["since"] is None   # no watermark yet: everything
    mark1 = read_watermark(load_config(config).output, "test-run")
    time.sleep(2.2)
    fs.pipe_file("videos/day2/c.mp4", CLIP)                 # night 2's run never happens
    time.sleep(1.2)
    fs.pipe_file("videos/day3/d.mp4", CLIP)
    fs.pipe_file("videos/day1/a.mp4", video("mp4", seconds=3))  # re-uploaded: new content, new etag
    night3 = run(config, incremental=True)
    assert night3["ok"] == 3, night3                        # c (missed night), d (new), a (re-uploaded)
    assert night3["skipped_time_window"] == 1               # b was not even probed again
    assert read_watermark(load_config(config).output, "test-run").started_at > mark1.started_at
    df = read_ledger(load_config(config).output)
    assert sorted(df.source_uri.str.rsplit("/", n=1).str[-1]) == ["a.mp4", "a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert df[df.source_uri.str.endswith("a.mp4")].source_etag.nunique() == 2
    quiet = run(config, incremental=True)
    assert quiet["ok"] + quiet["error"] == 0


def test_limited_or_dry_runs_do_not_move_the_watermark(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {f"c{i}.mp4": CLIP for i in range(3)})
    config = make_config(localapi)
    out = load_config(config).output
    run(config, incremental=True, dry_run=True)
    run(config, incremental=True, limit=1)
    assert read_watermark(out, "test-run") is None
    run(config, incremental=True)
    assert read_watermark(out, "test-run") is not None


def test_a_mistyped_prefix_never_moves_the_watermark_and_a_watermark_belongs_to_its_source(s3, localapi,
                                                                                          make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {"odd/a.mp4": CLIP, "odd/b.mp4": CLIP, "even/c.mp4": CLIP})
    typo = make_config(localapi, prefix="od/")              # meant odd/
    out = load_config(typo).output
    nothing = run(typo, incremental=True)
    assert nothing["ok"] + nothing["error"] == 0
    assert read_watermark(out, "test-run") is None          # a source that listed nothing moves no watermark
    fixed = run(make_config(localapi, prefix="odd/"), incremental=True)
    assert fixed["ok"] == 2 and fixed["skipped_time_window"] == 0
    assert read_watermark(out, "test-run", "s3://videos/odd/").source == "s3://videos/odd/"
    other = run(make_config(localapi, prefix="even/"), incremental=True)  # same job, another source: its own mark
    assert other["ok"] == 1 and other["since"] is None and other["skipped_time_window"] == 0
    assert read_watermark(out, "test-run", "s3://videos/odd/").run_id == fixed["run_id"]


def test_a_prefix_run_lists_below_its_prefix_and_reads_globs_relative_to_the_source(s3, localapi, make_config):
    """A backfill shard's `prefix`: only its objects, with the source's include globs (paths keep their
    source-relative form), and no watermark moved."""
    fs, _ = s3
    seed_bucket(fs, "videos", {"cam01/a.mp4": CLIP, "cam01/skip/b.mp4": CLIP, "cam02/c.mp4": CLIP})
    raw = yaml.safe_load(make_config(localapi).read_text())
    raw["source"]["include"] = ["cam0?/*.mp4"]
    config = make_config(localapi, name="globbed.yaml")
    config.write_text(yaml.safe_dump(raw))
    shard = run(config, prefix="cam01", incremental=True)
    assert (shard["ok"], shard["error"]) == (1, 0) and shard["skipped_filtered"] == 1
    assert set(read_ledger(load_config(config).output).source_uri) == {"s3://videos/cam01/a.mp4"}
    assert read_watermark(load_config(config).output, "test-run") is None
