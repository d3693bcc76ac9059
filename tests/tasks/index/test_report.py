"""The report over sources it cannot read: the page is written, each entry shown, the reason said once."""

from __future__ import annotations

from tasks.config.run import OutputConfig
from tasks.index.entries import write_entries
from tasks.index.report import write_report
from tasks.record.tables import now_utc
from tests.conftest import seed_bucket, video


def entry(uri: str, kind: str, start: float, end: float, label: str) -> dict:
    return {"run_id": "r", "job": "j", "created_at": now_utc(), "entry_id": f"{uri}-{kind}-{start}",
            "source_uri": uri, "source_key": uri,
            "request_key": uri, "stage": "extract", "kind": kind, "start_s": start, "end_s": end, "label": label,
            "video_duration_s": 4.0}


def test_sources_on_an_s3_endpoint_the_report_was_not_told_about(s3, tmp_path, monkeypatch):
    fs, _ = s3
    seed_bucket(fs, "videos", {"a.mp4": video("mp4", seconds=4), "b.mp4": video("mp4", seconds=4)})
    local = tmp_path / "c.mp4"
    local.write_bytes(video("mp4", seconds=4))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no metadata-service probe: fail as fast as offline can
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    rows = []
    for uri in ("s3://videos/a.mp4", "s3://videos/b.mp4", f"file://{local}"):
        rows += [entry(uri, "video", 0, 4, "video"), entry(uri, "chapter", 0, 2, "opening"),
                 entry(uri, "chapter", 2, 4, "closing")]
    out = tmp_path / "out"
    write_entries(rows, OutputConfig(url=str(out / "index")), "r")
    notes: list[str] = []
    path = write_report(str(out), {}, None, notes)  # no endpoint_url: the sources' endpoint is unknown to it
    page = (out / "report.html").read_text()
    assert path.endswith("report.html") and page.count('<section class="video">') == 3
    assert page.count("data:image/jpeg;base64,") == 2  # the local video's two chapters still have their frames
    assert len(notes) == 1 and notes[0].startswith("2 video(s) shown without thumbnails: s3://videos: ")
    assert "endpoint_url" in notes[0] and page.count("shown without thumbnails") == 1
