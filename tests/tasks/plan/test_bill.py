"""media.audio drop in the plan: GDC segments run to 120 s instead of 100 s, and the estimate counts no audio."""

from __future__ import annotations

import textwrap

import fsspec

from tasks.config.load import load_config
from tasks.discover.listing import SourceObject
from tasks.plan.items import plan_item
from tests.conftest import video


def plan(tmp_path, audio: str):
    data = video("mp4", seconds=110, audio=True, scene_seconds=30, width=64, height=48, fps=2)
    path = tmp_path / "lecture.mp4"
    path.write_bytes(data)
    cfg_path = tmp_path / f"{audio}.yaml"
    cfg_path.write_text(textwrap.dedent(f"""
        source: {{url: {tmp_path}}}
        provider: {{profile: localapi-gdc}}
        prompt: {{user: Summarize.}}
        output: {{url: {tmp_path / "ledger"}}}
        media: {{audio: {audio}}}
    """))
    cfg = load_config(cfg_path)
    obj = SourceObject(f"file://{path}", str(path), "lecture.mp4", len(data), "e1", None)
    return plan_item(fsspec.filesystem("file"), obj, cfg)


def test_dropping_audio_lets_a_gdc_segment_run_to_120_s(tmp_path):
    kept, dropped = plan(tmp_path, "keep"), plan(tmp_path, "drop")
    assert len(kept) == 2 and "cut" in kept[0].ops  # 110 s with audio: over GDC's 100 s
    assert len(dropped) == 1 and dropped[0].ops == ("drop_audio",)  # without audio: under its 120 s
    assert all(i.estimate is not None and i.estimate.audio > 0 for i in kept)
    est = dropped[0].estimate
    assert est is not None and est.audio == 0 and est.frames == 110 * 258 and est.timestamps == 110 * 7
    assert dropped[0].estimated_prompt_tokens == est.total
    # what keeping it costs: 32 of 297 tokens per sampled second
    for i in kept:
        assert i.estimate is not None and i.estimate.audio * 258 == i.estimate.frames * 32
