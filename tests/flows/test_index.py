"""The index flow end to end on real servers: moto S3, localapi over HTTP, Prefect's test harness, Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from flows.cli.main import main
from flows.index import index
from localapi.samples import SampleSpec
from tasks.config.load import PROJECT_ROOT, load_index_config
from tasks.index.entries import read_entries
from tasks.index.indexer import Indexer
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket, video
from tests.flows.conftest import API_KEY

pytestmark = pytest.mark.usefixtures("prefect_harness")

LECTURE = SampleSpec(seconds=300, scene_seconds=30, width=160, height=120, fps=4, audio=True)
CHROMIUM = "/usr/bin/chromium"


def lecture_bytes(spec: SampleSpec = LECTURE) -> bytes:
    return video("mp4", seconds=spec.seconds, audio=spec.audio, fps=spec.fps, scene_seconds=spec.scene_seconds)


@pytest.fixture
def index_config(make_config, localapi, tmp_path):
    """A ready config (configs/<name>.yaml) pointed at the moto bucket and the test's localapi."""

    def make(ready: str, out: str = "out", dialect: str = "gdc", prefix: str = "", folder: Path | None = None,
             **provider) -> Path:
        base = yaml.safe_load(make_config(localapi, dialect, prefix=prefix, name=f"{ready}-base.yaml",
                                          **provider).read_text())
        raw = yaml.safe_load((PROJECT_ROOT / "configs" / f"{ready}.yaml").read_text())
        raw["source"] = {**base["source"], **{k: v for k, v in raw["source"].items() if k != "url"}}
        raw["provider"], raw["output"]["url"] = base["provider"], str(tmp_path / out)
        if folder is not None:  # a local archive instead of the bucket
            raw["source"] = {"url": str(folder)}
        path = tmp_path / f"{ready}-{dialect}.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        return path

    return make


def run(config, **kw) -> dict:
    return asyncio.run(index(config=str(config), **kw))


def tables(config):
    ix = Indexer(load_index_config(config))
    entries = read_entries(ix.entries_output)
    return read_ledger(ix.ledger), entries.to_pandas() if entries is not None else None


def test_lecture_entries_cover_its_timeline_at_the_scene_changes(localapi, index_config, tmp_path):
    archive = tmp_path / "archive" / "2026 spring"
    archive.mkdir(parents=True)
    (archive / "week1.mp4").write_bytes(lecture_bytes())  # a local folder: the bucket is in the other tests
    config = index_config("lectures", folder=archive.parent)
    result = run(config)
    ledger, entries = tables(config)
    segments = ledger[ledger.stage.isna()].sort_values("segment_index")
    assert result["error"] == 0 and len(segments) >= 4
    assert (segments.segment_end_s - segments.segment_start_s <= 100).all()
    assert (segments.repairs == 0).all() and segments.request_key.is_unique and len(ledger) == len(segments) + 1
    assert {r["structured"] for r in localapi.stats()["last_requests"]} == {"json_schema"}
    reduce = ledger[ledger.stage == "reduce"].iloc[0]
    assert reduce.status == "ok" and reduce.source_key == segments.source_key.iloc[0] and pd_isna(reduce.mime)
    assert reduce.segment_count == len(segments) and reduce.total_tokens > 0
    assert (entries.start_s >= 0).all() and (entries.end_s <= 300.0).all() and (entries.start_s <= entries.end_s).all()
    for stage in ("extract", "reduce"):
        chapters = entries[(entries.kind == "chapter") & (entries.stage == stage)].sort_values("start_s")
        starts, ends = chapters.start_s.tolist(), chapters.end_s.tolist()
        assert len(chapters) == len(LECTURE.scene_changes) + 1, (stage, starts)
        assert starts[0] == 0 and abs(ends[-1] - 300) < 0.5
        assert all(abs(a - b) < 1.0 for a, b in zip(starts[1:], LECTURE.scene_changes, strict=True)), (stage, starts)
        # contiguous: the timeline is covered
        assert all(abs(b - a) < 0.1 for a, b in zip(ends, starts[1:], strict=False))
    split = entries[(entries.kind == "chapter") & (entries.stage == "extract") & (entries.request_keys.str.len() > 1)]
    assert len(split) >= 1  # a scene cut by a segment boundary is one entry made of both segments' answers
    assert {"chapter", "topic", "key_term", "on_screen_text", "video", "summary"} <= set(entries.kind)
    assert set(entries[entries.stage == "extract"].request_key) <= set(segments.request_key)
    summary = entries[entries.kind == "summary"].iloc[0]
    assert summary.request_key == reduce.request_key and summary.text.startswith("10 scenes over 300.0 s")

    again = run(config)
    assert (again["ok"], again["error"], again["entries"], again["skipped_already_done"]) == (0, 0, 0, 1)
    ledger2, entries2 = tables(config)
    assert len(ledger2) == len(ledger) and len(entries2) == len(entries) == entries.entry_id.nunique()


def test_malformed_answer_repaired_once_then_recorded_as_an_error(s3, localapi, index_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {"lectures/a.mp4": video("mp4", seconds=4)})
    config = index_config("lectures")
    localapi.config.script.extend(["badjson"])
    assert run(config)["error"] == 0
    ledger, entries = tables(config)
    row = ledger[ledger.stage.isna()].iloc[0]
    assert (row.status, row.repairs, row.attempts) == ("ok", 1, 2)
    keys = localapi.stats()["keys"]
    assert keys[row.request_key] == 1 and keys[f"{row.request_key}:repair"] == 1
    assert row.prompt_tokens == sum(t[2] for t in localapi.stats()["timeline"][:2])  # both requests were paid
    assert len(entries[entries.kind == "chapter"]) == 4  # 2 extracted + 2 whole-video chapters

    fs.pipe_file("videos/lectures/b.mp4", video("mp4", seconds=6))
    localapi.config.script.extend(["badjson", "badjson"])
    result = run(config)
    ledger, entries = tables(config)
    bad = ledger[ledger.source_uri == "s3://videos/lectures/b.mp4"]
    assert result["error"] == 1 and len(bad) == 1  # no reduce call for a video without a usable answer
    bad = bad.iloc[0]
    assert (bad.status, bad.error_type, bad.repairs, bad.attempts, bad.http_status) == ("error", "invalid_output", 1,
                                                                                          2, 200)
    assert "after one repair request" in bad.error_message and "is a required property" in bad.error_message
    assert bad.output_text.startswith("{") and bad.total_tokens > 0  # the answer and its cost are kept
    assert "s3://videos/lectures/b.mp4" not in set(entries.source_uri)


def test_surveillance_clips_packed_per_camera_hour(s3, localapi, index_config):
    fs, _ = s3
    clips = {"cam01/2026/11/21/08/a.mp4": 2, "cam01/2026/11/21/08/b.mp4": 3, "cam01/2026/11/21/08/c.mp4": 4,
             "cam01/2026/11/21/09/d.mp4": 3, "cam01/2026/11/21/09/e.mp4": 2, "cam02/2026/11/21/08/f.mp4": 4,
             "cam02/2026/11/21/08/g.mp4": 2}
    seed_bucket(fs, "videos", {k: video("mp4", seconds=s, audio=False) for k, s in clips.items()}
                | {"other/skip.mp4": video("mp4", seconds=2)})
    config = index_config("surveillance")
    result = run(config)
    ledger, entries = tables(config)
    assert (result["ok"], result["error"]) == (7, 0) and localapi.stats()["ok"] == 3  # three camera-hours
    assert set(ledger.source_uri) == {f"s3://videos/{k}" for k in clips} and ledger.stage.isna().all()
    for _, pack in ledger.groupby("request_id"):
        assert pack.source_uri.str.rsplit("/", n=1).str[0].nunique() == 1  # one camera folder and hour
        assert sorted(pack.pack_index) == list(range(len(pack))) and (pack.pack_size == len(pack)).all()
    assert sorted(ledger.groupby("request_id").size()) == [2, 2, 3]
    events = entries[entries.kind == "event"]
    for key, seconds in clips.items():  # each event lands on its own clip: the clips' lengths differ
        mine = events[events.source_uri == f"s3://videos/{key}"]
        assert len(mine) == (1 if seconds == 2 else 2) and mine.end_s.max() == pytest.approx(seconds, abs=0.01)
    assert set(events.label) == {"motion"} and events.attributes.str.contains('"region"').all()
    assert len(entries[entries.kind == "video"]) == 7 and not (entries.kind == "summary").any()
    at_rest = ledger.astype(str).to_csv() + entries.astype(str).to_csv()
    for needle in (API_KEY, "data:video", "base64,", "Bearer"):  # inline videos and the key never reach Parquet
        assert needle not in at_rest


def test_index_takes_the_providers_shared_limit_like_summarize(s3, localapi, index_config):
    from tasks.call.shared_pacing import limit_name
    from tasks.config.load import load_index_config as load
    from tests.flows.conftest import prefect_api

    fs, _ = s3
    seed_bucket(fs, "videos", {f"cam01/2026/11/21/08/{n}.mp4": video("mp4", seconds=2, audio=False) for n in "ab"})
    config = index_config("surveillance", limits={"rpm": 600, "concurrency": 2, "shared": True})
    result = run(config)
    assert (result["ok"], result["error"]) == (2, 0)
    name = limit_name(load(config).provider.name, "rpm")
    made = prefect_api("GET", f"/v2/concurrency_limits/{name}")  # created from the profile by the index run
    assert (made["limit"], made["slot_decay_per_second"]) == (600, 0)  # capacity rpm, slots leased (no decay)


def test_schema_stated_in_the_prompt_where_the_profile_says_so(s3, localapi, index_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {"lectures/a.mp4": video("mp4", seconds=6)})
    config = index_config("lectures", dialect="trinity", structured_output="prompt")
    assert run(config)["ok"] == 2
    ledger, entries = tables(config)
    assert {r["structured"] for r in localapi.stats()["last_requests"]} == {"prompt"}
    assert ledger.prompt.str.contains('"on_screen_text"').all()
    assert not ledger.request_params.str.contains("response_format").any()
    assert len(entries[(entries.kind == "chapter") & (entries.stage == "extract")]) == 3


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)


def test_report_opens_in_chromium_with_one_timeline_per_video(s3, localapi, index_config, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed: `scripts/dev test` installs Debian's package when run as root")
    fs, endpoint = s3
    seed_bucket(fs, "videos", {"lectures/intro.mp4": video("mp4", seconds=8),
                               "lectures/week2.mp4": video("mp4", seconds=12, scene_seconds=3)})
    config = index_config("lectures")
    assert main(["index", str(config), "--quiet"]) == 0
    out = tmp_path / "out"
    assert main(["report", str(out), "--storage-option", f"endpoint_url={endpoint}"]) == 0
    page = (out / "report.html").read_text()
    assert not re.findall(r'(?:src|href)="(?!data:)', page)  # self-contained: nothing to fetch
    assert page.count('<img alt="frame at') == 4 + 4 == page.count("data:image/jpeg;base64,")  # a frame per chapter
    dom = chromium("--dump-dom", (out / "report.html").as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<section class="video">') == 2 and dom.stdout.count('class="timeline"') == 2
    assert "intro.mp4" in dom.stdout and "week2.mp4" in dom.stdout and "total tokens" in dom.stdout
    shot = tmp_path / "report.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1280,1500", (out / "report.html").as_uri())
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", done.stderr[-2000:]
    print(f"report screenshot: {shot}")


def readme_blocks(heading: str) -> list[str]:
    """The ```python blocks of one README section."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_queries_run_as_written(s3, localapi, index_config, tmp_path, monkeypatch):
    fs, _ = s3
    seed_bucket(fs, "videos", {"lectures/week1.mp4": video("mp4", seconds=12, scene_seconds=4),
                               "cam01/2026/11/21/08/a.mp4": video("mp4", seconds=4, audio=False)})
    for ready, prefix in (("lectures", "lectures/"), ("surveillance", "")):
        assert run(index_config(ready, out=f"demo-output/index/{ready}", prefix=prefix))["error"] == 0
    monkeypatch.chdir(tmp_path)
    blocks = readme_blocks("## Querying the index")
    assert len(blocks) >= 3
    found = {}
    for code in blocks:
        scope: dict = {}
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            exec(compile(code, "README.md", "exec"), scope)
        assert printed.getvalue().strip(), code
        found.update({k: v for k, v in scope.items() if k in ("moments", "events", "chapters")})
    moments, events = found["moments"], found["events"]
    assert list(moments.columns[:4]) == ["source_uri", "kind", "start_s", "end_s"]
    term = moments[moments.kind == "key_term"]  # "green" is the second scene of the lecture: 4 s to 8 s
    assert term.source_uri.tolist() == ["s3://videos/lectures/week1.mp4"] and term.start_s.tolist() == [4.0]
    assert set(events.source_uri) == {"s3://videos/cam01/2026/11/21/08/a.mp4"} and len(events) == 2


def pd_isna(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))
