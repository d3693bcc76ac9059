"""The generate flow on real servers: localapi's Luma endpoints over HTTP, moto S3, Prefect's test harness."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from flows.cli.main import generate_exit_status
from flows.generate import generate
from tasks.config.load import load_config, load_generate_config
from tasks.errors import ConfigError
from tasks.generate.table import read_generations
from tasks.media.probe import probe
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket
from tests.flows.conftest import API_KEY, all_logs, artifacts, prefect_api
from tests.images import png, png_data_url

pytestmark = pytest.mark.usefixtures("prefect_harness")

PROMPTS = [
    {"user_prompt": "cat dance", "expand_prompt": True, "loop": True, "aspect_ratio": "16:9",
     "image_url": "refs/first frame.png", "image_end_url": png_data_url(rgb=(0, 0, 255))},
    {"user_prompt": "a van at a loading dock, security camera", "aspect_ratio": "4:3"},
    {"user_prompt": "美人鱼", "aspect_ratio": "9:16", "notify_hook": "https://hooks.example.com/done?token=HOOKSECRET"},
]


@pytest.fixture
def luma(localapi):
    """The test's localapi with fast generation: each in-progress state lasts 0.1 s."""
    localapi.luma.configure({"step_s": 0.1})
    return localapi.luma


@pytest.fixture
def gen_config(tmp_path, monkeypatch, s3, localapi):
    """Write a generation config for the test's localapi; returns its path."""
    _, endpoint = s3
    monkeypatch.setenv("VB_LUMA_KEY", API_KEY)

    def make(prompts: str, output: str, name="generate.yaml", **over):
        raw = {"job": "gen-test",
               "prompts": {"url": prompts, "storage_options": {"endpoint_url": endpoint}},
               "provider": {"base_url": localapi.url, "api_key_env": "VB_LUMA_KEY", "max_attempts": 3,
                            "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "limits": {"concurrency": 4}},
               "poll": {"interval_s": 0.1, "backoff": 1.5, "max_interval_s": 0.3, "deadline_s": 30},
               "output": {"url": output, "storage_options": {"endpoint_url": endpoint}}}
        for section, values in over.items():
            raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        return path

    return make


def write_csv(path, rows):
    cols = ["user_prompt", "expand_prompt", "image_url", "image_end_url", "loop", "aspect_ratio", "notify_hook"]
    out = io.StringIO()
    import csv

    writer = csv.DictWriter(out, cols)
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


async def flush_logs():
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()


def run(config, **kw):
    return asyncio.run(generate(config=str(config), **kw))


def table(config):
    return read_generations(load_generate_config(config).output)


def test_a_batch_is_submitted_polled_and_stored_in_s3(s3, luma, gen_config):
    fs, _ = s3
    seed_bucket(fs, "gen", {"lists/prompts.yaml": yaml.safe_dump(PROMPTS, allow_unicode=True).encode(),
                            "lists/refs/first frame.png": png()})
    # one state the API never named; every state outlasts the longest wait between polls, so each is seen
    luma.configure({"states": ["pending", "queued", "upscaling", "processing"], "step_s": 0.5})
    config = gen_config("s3://gen/lists/prompts.yaml", "s3://gen/out", poll={"max_interval_s": 0.2})
    result = run(config)
    assert (result["submitted"], result["completed"], result["failed"], result["in_progress"]) == (3, 3, 0, 0)
    stats = luma.stats()
    assert stats["by_prompt"] == {p["user_prompt"]: 1 for p in PROMPTS} and stats["downloads"] == 3
    df = table(config)
    assert list(df.status) == ["completed"] * 3 and df.task_id.is_unique and list(df.prompt_row) == [1, 2, 3]
    for row, sizes in zip(df.itertuples(), [(192, 108), (160, 120), (108, 192)], strict=True):
        assert [s["state"] for s in row.states] == ["pending", "queued", "upscaling", "processing", "completed"]
        assert row.output_uri.startswith("s3://gen/out/videos/") and row.output_uri.endswith(".mp4")
        data = fs.cat_file(row.output_uri)
        facts = probe(io.BytesIO(data), row.output_uri)
        assert len(data) == row.output_bytes and (facts.width, facts.height) == sizes == (row.video_width,
                                                                                            row.video_height)
        assert row.submitted_at <= row.finished_at <= row.stored_at and row.generation_s > 0
    first = df.iloc[0]
    assert first.image_url == "s3://gen/lists/refs/first frame.png"  # sent presigned; localapi fetched and checked it
    assert first.image_end_url.startswith("data:image/png;base64,<") and df.iloc[2].notify_hook == \
        "https://hooks.example.com/done"
    assert sorted(fs.ls("gen/out/generations")) == ["gen/out/generations/date=" + str(first.created_at.date())]
    asyncio.run(flush_logs())
    logs = " ".join(e["message"] for e in all_logs())
    assert "unknown state 'upscaling', treated as in progress" in logs
    art = json.loads(artifacts("generate-gen-test")[0]["data"])[0]
    assert (art["completed"], art["failed"], art["prompts"]) == (3, 0, 3)
    rows = read_generations(load_generate_config(config).output, latest=False).astype(str).to_csv()
    raw = b"".join(fs.cat_file(f) for f in fs.find("gen/out/generations")).decode("latin-1")
    params = str(prefect_api("GET", f"/flow_runs/{result['run_id']}")["parameters"])
    for secret in (API_KEY, "X-Amz", "Signature", "HOOKSECRET", "iVBOR", "AWSAccessKeyId"):
        for where, blob in (("table", rows), ("parquet", raw), ("logs", logs), ("parameters", params)):
            assert secret not in blob, (secret, where)
    again = run(config)
    assert (again["submitted"], again["skipped_completed"]) == (0, 3) and luma.stats()["submitted"] == 3


def test_invalid_aspect_ratios_are_refused_before_anything_is_sent(tmp_path, luma, gen_config):
    rows = [{"user_prompt": "fine"}, {"user_prompt": "cinema", "aspect_ratio": "21:9"},
            {"user_prompt": "square-ish", "aspect_ratio": "1:2"}]
    config = gen_config(str(write_csv(tmp_path / "prompts.csv", rows)), str(tmp_path / "out"))
    with pytest.raises(ConfigError) as e:
        run(config)
    assert "prompts.csv: row 2 (line 3): aspect_ratio: must be one of 1:1, 4:3, 3:4, 16:9, 9:16 (got '21:9')" \
        in str(e.value)
    assert "row 3 (line 4): aspect_ratio" in str(e.value)
    cli = start_cli(config)
    _, err = cli.communicate(timeout=120)
    assert cli.returncode == 2 and "row 2 (line 3): aspect_ratio" in err and "nothing was sent" in err
    assert luma.stats()["submitted"] == 0 and not (tmp_path / "out").exists()


def test_failed_tasks_are_recorded_with_their_reason_and_resubmitted_only_on_request(tmp_path, luma, gen_config):
    luma.configure({"failure_rate": 1.0, "failure_reason": "moderation: the prompt was refused"})
    config = gen_config(str(write_csv(tmp_path / "p.csv", PROMPTS[1:])), str(tmp_path / "out"))
    result = run(config)
    assert (result["completed"], result["failed"]) == (0, 2) and generate_exit_status(result) == 1
    df = table(config)
    assert set(df.failure_reason) == {"moderation: the prompt was refused"} and set(df.error_type) == {"provider"}
    assert set(df.state) == {"failed"} and all(r[-1]["state"] == "failed" for r in df.states)
    rerun = run(config)
    assert (rerun["submitted"], rerun["skipped_failed"]) == (0, 2) and luma.stats()["submitted"] == 2
    luma.configure({"failure_rate": 0.0})
    retried = run(config, retry_failed=True)
    assert (retried["submitted"], retried["completed"]) == (2, 2)
    assert luma.stats()["by_prompt"] == {p["user_prompt"]: 2 for p in PROMPTS[1:]}
    df = table(config)
    assert set(df.status) == {"completed"} and df.failure_reason.isna().all()


def start_cli(*args):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "generate", *map(str, args), "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_sigkill_mid_poll_then_rerun_submits_nothing_twice(tmp_path, luma, gen_config):
    luma.configure({"step_s": 60})  # nothing finishes while the first run polls
    config = gen_config(str(write_csv(tmp_path / "p.csv", PROMPTS[1:] + [{"user_prompt": "a third clip"}])),
                        str(tmp_path / "out"))
    proc = start_cli(config)
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        tasks = luma.stats()["tasks"]
        if len(tasks) == 3 and all(t["polls"] >= 2 for t in tasks):  # a task is polled once its id is stored
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started
    proc.wait()
    before = table(config)
    assert list(before.status) == ["in_progress"] * 3 and before.task_id.notna().all()
    luma.configure({"step_s": 0.05})
    result = run(config)
    assert (result["submitted"], result["resumed"], result["completed"]) == (0, 3, 3)
    assert luma.stats()["by_prompt"] == {"a third clip": 1, **{p["user_prompt"]: 1 for p in PROMPTS[1:]}}
    after = table(config)
    assert list(after.task_id) == list(before.task_id) and set(after.status) == {"completed"}
    rerun = start_cli(config)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err[-2000:]
    assert "skipped_completed  3" in out and luma.stats()["submitted"] == 3


def test_a_deadline_leaves_tasks_recorded_in_progress(tmp_path, luma, gen_config):
    luma.configure({"step_s": 60})
    config = gen_config(str(write_csv(tmp_path / "p.csv", PROMPTS[1:])), str(tmp_path / "out"),
                        poll={"deadline_s": 0.4})
    result = run(config)
    assert (result["submitted"], result["completed"], result["in_progress"]) == (2, 0, 2)
    assert generate_exit_status(result) == 3
    df = table(config)
    assert set(df.status) == {"in_progress"} and set(df.state) == {"pending"} and (df.polls >= 1).all()
    assert luma.stats()["submitted"] == 2


def test_chaining_summarizes_the_clips_once_the_batch_is_finished(tmp_path, s3, luma, gen_config, make_config):
    fs, endpoint = s3
    fs.mkdir("clips")
    summarize_config = make_config(luma.api, "openai", bucket="clips", prefix="batch/videos", name="summarize.yaml")
    config = gen_config(str(write_csv(tmp_path / "p.csv", PROMPTS[1:])), "s3://clips/batch",
                        summarize=str(summarize_config))
    luma.configure({"step_s": 60})
    waiting = run(config, deadline_s=0.3)
    assert waiting["in_progress"] == 2 and waiting["summarize"] is None
    luma.configure({"step_s": 0.05})
    done = run(config)
    assert done["completed"] == 2 and done["summarize"]["ok"] == 2
    ledger = read_ledger(load_config(summarize_config).output)
    clips = set(table(config).output_uri)
    assert set(ledger.source_uri) == clips and set(ledger.status) == {"ok"}
    assert all("duration 2.00 s" in text for text in ledger.output_text)  # localapi decoded the generated clips
    wrong = gen_config(str(tmp_path / "p.csv"), str(tmp_path / "elsewhere"), name="wrong.yaml",
                       summarize=str(summarize_config))
    with pytest.raises(ConfigError, match="set its source.url to"):
        run(wrong)
