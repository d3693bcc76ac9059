"""Planning refuses what cannot be right: a timeline the file cannot back, a video over media.max_duration_s."""

from __future__ import annotations

import fractions
import io

import av
import numpy as np
import pytest
import yaml
from fsspec.implementations.local import LocalFileSystem

from tasks.config.load import load_config
from tasks.discover.listing import SourceObject
from tasks.errors import LimitError, MediaError
from tasks.media.probe import probe
from tasks.plan.items import plan_item
from tests.conftest import video


def sparse_video(seconds: float) -> bytes:
    """Two frames `seconds` apart: a real mp4 of ~1.5 KB whose timeline is `seconds` long."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=1)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        for t in (0, int(seconds)):
            f = av.VideoFrame.from_ndarray(np.zeros((24, 32, 3), np.uint8), format="rgb24")
            f.pts, f.time_base = t, fractions.Fraction(1, 1)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def test_a_ten_hour_header_on_a_tiny_file_is_a_media_error():
    data = sparse_video(36000)
    assert len(data) < 4000
    with pytest.raises(MediaError, match=r"tiny\.mp4: its header claims 36,00\d s.*cannot back") as e:
        probe(io.BytesIO(data), "s3://b/tiny.mp4", len(data))
    assert e.value.kind == "media"
    assert probe(io.BytesIO(video("mp4", seconds=2)), "ok.mp4", 10_000).duration_s == pytest.approx(2, abs=0.2)


def plan(tmp_path, data: bytes, media: dict | None = None, profile_media: dict | None = None):
    path = tmp_path / "v.mp4"
    path.write_bytes(data)
    cfg = {"job": "j", "source": {"url": str(tmp_path)}, "prompt": {"user": "hi"},
           "provider": {"dialect": "openai", "model": "m", "base_url": "localapi", "media": profile_media or {}},
           "output": {"url": str(tmp_path / "out")}, "media": media or {}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    obj = SourceObject(uri=f"file://{path}", path=str(path), rel="v.mp4", size=len(data), etag=None, mtime=None)
    return plan_item(LocalFileSystem(), obj, load_config(tmp_path / "run.yaml"))


def test_the_planner_records_the_unbacked_timeline_as_a_media_error(tmp_path):
    [item] = plan(tmp_path, sparse_video(36000))
    assert isinstance(item.error, MediaError) and item.error.kind == "media" and "cannot back" in str(item.error)


def test_media_max_duration_s_refuses_longer_videos_by_name(tmp_path):
    clip = video("mp4", seconds=4)
    [item] = plan(tmp_path, clip, media={"max_duration_s": 3})
    assert isinstance(item.error, LimitError) and "v.mp4" in str(item.error)
    assert "longer than media.max_duration_s (3 s)" in str(item.error)
    [item] = plan(tmp_path, clip, profile_media={"max_duration_s": 2.5})
    assert isinstance(item.error, LimitError) and "max_duration_s (2.5 s)" in str(item.error)
    [item] = plan(tmp_path, clip, media={"max_duration_s": 60})
    assert item.error is None and item.segment_count == 1
