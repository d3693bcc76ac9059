"""The one run loop behind summarize and index: the next batch is planned while the last one is still sent."""

from __future__ import annotations

import asyncio
import threading

import pytest
import yaml

import flows.run as loop
from flows.index import index
from flows.summarize import summarize
from tasks.config.load import PROJECT_ROOT
from tests.conftest import seed_bucket, video

pytestmark = pytest.mark.usefixtures("prefect_harness")

CLIPS = {f"cam01/2026/11/21/clip{i}.mp4": video("mp4", seconds=2, audio=False) for i in range(6)}


def index_config(path, run_config) -> str:
    """The lectures index config with the test's source, provider and a folder output."""
    base = yaml.safe_load(run_config.read_text())
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "lectures.yaml").read_text())
    raw["source"] = base["source"]
    raw["provider"] = base["provider"]
    raw["output"] = {**raw.get("output", {}), "url": str(path / "index-out"), "batch_size": 2}
    out = path / "index.yaml"
    out.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return str(out)


@pytest.mark.parametrize("flow_name", ["summarize", "index"])
def test_next_batch_is_planned_while_the_last_is_sent(s3, localapi, make_config, tmp_path, monkeypatch, flow_name):
    fs, _ = s3
    seed_bucket(fs, "videos", CLIPS)
    localapi.config.latency = (0.4, 0.4)  # each request takes 0.4 s: a batch of 2 is in flight that long
    config = make_config(localapi, "gdc")  # output.batch_size 2: three batches
    if flow_name == "index":
        config = index_config(tmp_path, config)
    events: list[tuple[str, int]] = []
    lock = threading.Lock()
    plan_items, call_items = loop.plan_items, loop.call_items

    def planned(fs, objs, cfg):
        with lock:
            batch = sum(kind == "plan" for kind, _ in events)
            events.append(("plan", batch))
        return plan_items(fs, objs, cfg)

    async def sent(items, *args, **kwargs):
        with lock:
            batch = sum(kind == "send" for kind, _ in events)
            events.append(("send", batch))
        try:
            return await call_items(items, *args, **kwargs)
        finally:
            with lock:
                events.append(("sent", batch))

    monkeypatch.setattr(loop, "plan_items", planned)
    monkeypatch.setattr(loop, "call_items", sent)
    flow = summarize if flow_name == "summarize" else index
    result = asyncio.run(flow(config=str(config)))

    assert result["ok"] >= 6 and result["error"] == 0, result
    assert [b for kind, b in events if kind == "plan"] == [0, 1, 2]
    # batch 1 is planned and started while batch 0 is still being sent (0.4 s per request)
    assert events.index(("plan", 1)) < events.index(("send", 1)) < events.index(("sent", 0)), events
    # and the loop never holds more than the last batch and the next one in flight
    for batch in (2,):
        assert events.index(("sent", batch - 2)) < events.index(("send", batch)), events
