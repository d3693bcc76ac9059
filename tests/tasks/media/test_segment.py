import io
from pathlib import Path

import av
import pytest

from localapi.samples import SampleSpec, write_sample_file
from tasks.errors import MediaError
from tasks.media.probe import probe
from tasks.media.segment import Cut, cut, keyframe_times, plan_segments, shrink, transcode
from tests.conftest import video

FPS = 4
FRAME = 1 / FPS
EPS = 1e-6


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Inputs made once per module: a 5-minute lecture with audio, 119 s and 121 s silent clips, a 30 s clip."""
    d = tmp_path_factory.mktemp("segment-inputs")
    small = {"width": 160, "height": 120, "fps": FPS, "scene_seconds": 10}
    return {
        "lecture": write_sample_file(d / "lecture.mp4", SampleSpec(seconds=300, audio=True, **small)),
        "silent119": write_sample_file(d / "silent119.mp4", SampleSpec(seconds=119, audio=False, **small)),
        "silent121": write_sample_file(d / "silent121.mp4", SampleSpec(seconds=121, audio=False, **small)),
        "big": write_sample_file(d / "big.mp4", SampleSpec(seconds=30, scene_seconds=3, width=320, height=240,
                                                            fps=12, audio=True)),
    }


def duration(path) -> float:
    with open(path, "rb") as f:
        return probe(f, str(path)).duration_s


def decode_all(path) -> tuple[int, float, int]:
    """(video frames, audio seconds, audio channels) of a file, decoding every packet."""
    with av.open(str(path)) as c:
        streams = [c.streams.video[0], *c.streams.audio[:1]]
        frames, samples = 0, 0
        for frame in c.decode(*streams):
            if isinstance(frame, av.VideoFrame):
                frames += 1
            else:
                samples += frame.samples
        audio = c.streams.audio[0] if c.streams.audio else None
        return frames, samples / audio.sample_rate if audio else 0.0, audio.codec_context.channels if audio else 0


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def check_windows(windows, total, limit, overlap=0.0):
    assert windows[0][0] == 0 and windows[-1][1] == total
    assert all(end - start <= limit + EPS for start, end in windows)
    for (_, end), (start, _) in zip(windows, windows[1:], strict=False):
        assert end - start == pytest.approx(overlap, abs=EPS)  # covered with the overlap, no gap


# ---- plan_segments (pure) ----------------------------------------------------------------------------------------

def test_a_video_that_fits_is_one_window():
    assert plan_segments(119.0, 120) == [(0.0, 119.0)]
    assert plan_segments(99.5, 100) == [(0.0, 99.5)]
    assert len(plan_segments(99.6, 100)) == 2  # within the margin of the limit: split, since decoders differ


def test_300_s_at_a_100_s_limit_is_four_equal_windows_that_cover_it():
    windows = plan_segments(300.0, 100)
    check_windows(windows, 300.0, 99.5)
    assert windows == [(0.0, 75.0), (75.0, 150.0), (150.0, 225.0), (225.0, 300.0)]


def test_overlap_repeats_seconds_at_each_boundary():
    windows = plan_segments(300.0, 100, overlap_s=5)
    check_windows(windows, 300.0, 99.5, overlap=5)
    assert len(windows) == 4


def test_target_is_the_preferred_length():
    windows = plan_segments(300.0, 100, target_s=30, overlap_s=2)
    check_windows(windows, 300.0, 30, overlap=2)
    assert len(windows) == 11


def test_boundaries_snap_to_keyframes_when_the_windows_still_fit():
    keyframes = [i * 7.0 for i in range(43)]
    windows = plan_segments(300.0, 100, overlap_s=3, keyframes=keyframes)
    check_windows(windows, 300.0, 99.5, overlap=3)
    assert all(start in keyframes for start, _ in windows)


def test_a_boundary_stays_unsnapped_when_no_keyframe_fits():
    windows = plan_segments(300.0, 100, keyframes=[0.0, 140.0, 290.0])
    check_windows(windows, 300.0, 99.5)
    assert [start for start, _ in windows] == [0.0, 75.0, 140.0, 220.0]  # 140 snapped; 75 and 220 re-encode


@pytest.mark.parametrize("args", [dict(duration_s=0, max_s=100), dict(duration_s=10, max_s=0.5),
                                  dict(duration_s=300, max_s=100, overlap_s=99.5),
                                  dict(duration_s=300, max_s=100, target_s=0)])
def test_bad_plans_are_refused(args):
    with pytest.raises(ValueError):
        plan_segments(**args)


# ---- keyframes and cuts of a 5-minute lecture ------------------------------------------------------------------------

def test_keyframe_times_of_the_lecture(media):
    keys = keyframe_times(media["lecture"])
    assert keys[0] == 0.0 and keys == sorted(set(keys)) and keys[-1] < 300
    with av.open(str(media["lecture"])) as c:
        flagged = sum(p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size)
    assert len(keys) == flagged > 10


def test_lecture_is_stream_copied_at_keyframes_into_segments_that_sum_to_it(media, tmp_path):
    source = duration(media["lecture"])
    source_frames, source_audio, _ = decode_all(media["lecture"])
    windows = plan_segments(source, 100, keyframes=keyframe_times(media["lecture"]))
    assert len(windows) >= 4 and all(start in keyframe_times(media["lecture"]) for start, _ in windows)
    cuts = [cut(media["lecture"], a, b, str(tmp_path / f"seg{i}.mp4")) for i, (a, b) in enumerate(windows)]
    assert [c.mode for c in cuts] == ["copy"] * len(windows)
    assert [x for c in cuts for x in (c.start_s, c.end_s)] == pytest.approx([x for w in windows for x in w],
                                                                           abs=2 * FRAME)
    durations = [duration(c.path) for c in cuts]
    for c, (a, b), d in zip(cuts, windows, durations, strict=True):
        assert c.has_audio and c.container == "mp4" and c.size == Path(c.path).stat().st_size
        assert d == pytest.approx(b - a, abs=2 * FRAME) and d <= 100
    assert sum(durations) == pytest.approx(source, abs=2 * FRAME)
    decoded = [decode_all(c.path) for c in cuts]
    assert sum(f for f, _, _ in decoded) == source_frames  # every frame once, all decodable
    assert sum(a for _, a, _ in decoded) == pytest.approx(source_audio, abs=0.5)
    assert leftovers(tmp_path) == []


def test_lecture_is_reencoded_exactly_into_segments_that_sum_to_it(media, tmp_path):
    source = duration(media["lecture"])
    windows = plan_segments(source, 100)
    cuts = [cut(media["lecture"], a, b, str(tmp_path / f"seg{i}.mp4"), mode="reencode")
            for i, (a, b) in enumerate(windows)]
    assert {c.mode for c in cuts} == {"reencode"} and all(c.has_audio for c in cuts)
    durations = [duration(c.path) for c in cuts]
    assert durations == pytest.approx([b - a for a, b in windows], abs=2 * FRAME)
    assert sum(durations) == pytest.approx(source, abs=2 * FRAME)
    for c, (a, b) in zip(cuts, windows, strict=True):
        frames, audio_s, _ = decode_all(c.path)
        assert frames == round((b - a) * FPS) and audio_s == pytest.approx(b - a, abs=0.1)


def test_overlapping_copies_repeat_the_overlap(media, tmp_path):
    windows = plan_segments(300.0, 100, overlap_s=4, keyframes=keyframe_times(media["lecture"]))
    cuts = [cut(media["lecture"], a, b, str(tmp_path / f"seg{i}.mp4"), mode="copy") for i, (a, b) in enumerate(windows)]
    for c, (a, b) in zip(cuts, windows, strict=True):
        assert duration(c.path) == pytest.approx(b - a, abs=5 * FRAME)  # copies may end a B-frame run early
    for left, right in zip(cuts, cuts[1:], strict=False):
        assert left.end_s - right.start_s >= 4 - 5 * FRAME


def test_copy_starts_at_the_keyframe_before_and_auto_reencodes_off_keyframes(media, tmp_path):
    keys = keyframe_times(media["lecture"])
    start = next(k for k in keys if k > 30) + 2 * FRAME  # between keyframes
    before = max(k for k in keys if k <= start)
    copied = cut(media["lecture"], start, start + 20, str(tmp_path / "copy.mp4"), mode="copy")
    assert copied.mode == "copy" and copied.start_s == pytest.approx(before)
    assert duration(copied.path) == pytest.approx(copied.end_s - copied.start_s, abs=2 * FRAME)
    auto = cut(media["lecture"], start, start + 20, str(tmp_path / "auto.mp4"))
    assert auto.mode == "reencode" and auto.start_s == pytest.approx(start)
    assert duration(auto.path) == pytest.approx(20, abs=2 * FRAME)


def test_file_objects_are_read_like_paths(media, tmp_path):
    with open(media["lecture"], "rb") as f:
        c = cut(f, 150.0, 160.0, str(tmp_path / "fo.mp4"), mode="reencode")
    assert duration(c.path) == pytest.approx(10, abs=2 * FRAME)


@pytest.mark.parametrize("name, windows", [("silent119", 1), ("silent121", 2)])
def test_silent_videos_against_the_120_s_limit(media, tmp_path, name, windows):
    total = duration(media[name])
    plan = plan_segments(total, 120, keyframes=keyframe_times(media[name]))
    assert len(plan) == windows
    if windows == 1:
        return
    cuts = [cut(media[name], a, b, str(tmp_path / f"s{i}.mp4")) for i, (a, b) in enumerate(plan)]
    durations = [duration(c.path) for c in cuts]
    assert all(d <= 120 for d in durations) and not any(c.has_audio for c in cuts)
    assert sum(durations) == pytest.approx(total, abs=2 * FRAME)


# ---- shrink and transcode --------------------------------------------------------------------------------------------

def test_shrink_fits_a_third_of_the_size(media, tmp_path):
    size = media["big"].stat().st_size
    c = shrink(media["big"], str(tmp_path / "small.mp4"), max_bytes=size // 3)
    assert c.size <= size // 3 and c.mode == "reencode" and c.has_audio
    with open(c.path, "rb") as f:
        p = probe(f, c.path)
    assert p.video_codec == "h264" and p.audio_codec == "aac" and p.height <= 240
    assert p.duration_s == pytest.approx(30, abs=2 / 12)
    frames, _, channels = decode_all(c.path)
    assert frames == 30 * 12 and channels == 1


def test_shrink_names_the_limit_and_the_measured_size_when_nothing_fits(media, tmp_path):
    with pytest.raises(MediaError, match=r"big\.mp4.*limit of 2000 bytes.*measured \d+ bytes"):
        shrink(media["big"], str(tmp_path / "tiny.mp4"), max_bytes=2000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("container", ["avi", "flv", "wmv"])
def test_transcode_to_mp4(tmp_path, container):
    c = transcode(io.BytesIO(video(container, seconds=4)), str(tmp_path / "out.mp4"))
    assert isinstance(c, Cut) and c.container == "mp4" and c.mode == "reencode" and c.has_audio
    with open(c.path, "rb") as f:
        p = probe(f, c.path)
    assert (p.video_codec, p.audio_codec, p.width, p.height) == ("h264", "aac", 160, 120)
    assert p.duration_s == pytest.approx(4, abs=0.15)


def test_copy_is_refused_when_codecs_do_not_fit_and_auto_reencodes(tmp_path):
    data = video("avi", seconds=4)  # mpeg4 + mp2: mp2 does not go into mp4
    with pytest.raises(MediaError, match="does not fit mp4"):
        cut(io.BytesIO(data), 0, 2, str(tmp_path / "a.mp4"), mode="copy")
    assert cut(io.BytesIO(data), 0, 2, str(tmp_path / "a.mp4")).mode == "reencode"


# ---- bad input ---------------------------------------------------------------------------------------------------

def lying_index(path: Path) -> float:
    """Remux an mpeg4 sample flagging one P-frame as a keyframe (FFmpeg trusts mp4 flags for mpeg4); its time."""
    lie = None
    with av.open(io.BytesIO(video("3gp", seconds=8))) as c, av.open(str(path), "w", format="mp4") as out:
        vs, audio = c.streams.video[0], c.streams.audio[0]
        ov, oa = out.add_stream_from_template(vs), out.add_stream_from_template(audio)
        for i, packet in enumerate(p for p in c.demux(vs, audio) if p.size):
            if packet.stream is vs and lie is None and i > 8 and not packet.is_keyframe:
                packet.is_keyframe, lie = True, float(packet.pts * packet.time_base)
            packet.stream = ov if packet.stream is vs else oa
            out.mux(packet)
    return lie


def test_a_keyframe_index_that_lies(tmp_path):
    liar = tmp_path / "liar.mp4"
    lie = lying_index(liar)
    assert lie in keyframe_times(liar)
    with pytest.raises(MediaError, match=r"liar\.mp4.*keyframe.*does not decode on its own"):
        cut(liar, lie, lie + 2, str(tmp_path / "copy.mp4"), mode="copy")
    auto = cut(liar, lie, lie + 2, str(tmp_path / "auto.mp4"))
    assert auto.mode == "reencode" and decode_all(auto.path)[0] == 2 * 8
    assert leftovers(tmp_path) == []


def garbage(path: Path, media) -> None:
    path.write_bytes(b"this is not a video\n" * 500)


def truncated(path: Path, media) -> None:
    data = media["lecture"].read_bytes()  # index (moov) at the end: cut off
    path.write_bytes(data[: len(data) // 2])


def truncated_after_index(path: Path, media) -> None:
    whole = path.with_name("whole.mp4")  # our own outputs put the index first
    cut(media["lecture"], 0, 80, str(whole), mode="copy")
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: len(data) // 2])


def no_video(path: Path, media) -> None:
    with av.open(str(media["lecture"])) as c, av.open(str(path), "w", format="mp4") as out:
        audio = c.streams.audio[0]
        oa = out.add_stream_from_template(audio)
        for packet in c.demux(audio):
            if packet.size and packet.pts < 5 / packet.time_base:
                packet.stream = oa
                out.mux(packet)


OPERATIONS = {
    "keyframe_times": lambda src, dst: keyframe_times(src),
    "copy": lambda src, dst: cut(src, 50, 70, dst, mode="copy"),
    "reencode": lambda src, dst: cut(src, 50, 70, dst, mode="reencode"),
    "transcode": lambda src, dst: transcode(src, dst),
    "shrink": lambda src, dst: shrink(src, dst, 100_000),
}


@pytest.mark.parametrize("make, step", [(garbage, "open"), (truncated, "open"),
                                        (truncated_after_index, "truncated|decode"), (no_video, "no video")])
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_bad_input_is_a_media_error_naming_it(media, tmp_path, make, step, operation):
    src = tmp_path / "bad.mp4"
    make(src, media)
    with pytest.raises(MediaError, match=rf"bad\.mp4: .*({step})"):
        OPERATIONS[operation](src, str(tmp_path / "out.mp4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_a_segment_past_the_end_is_empty(media, tmp_path):
    for mode in ("copy", "reencode"):
        with pytest.raises(MediaError, match="empty"):
            cut(media["silent119"], 200, 210, str(tmp_path / "late.mp4"), mode=mode)
    assert list(tmp_path.iterdir()) == []
