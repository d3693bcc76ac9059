"""Cut, shrink and transcode videos with PyAV: plan windows that fit a provider's limits, then write them.

Times are on the source's absolute timeline: seconds from the container's start time, as a player shows them.
Inputs are local paths or readable, seekable binary file objects; outputs are local paths written atomically.
Every media failure raises MediaError naming the input and the step; bad arguments raise ValueError.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from tasks.errors import MediaError

__all__ = ["Cut", "cut", "keyframe_times", "plan_segments", "shrink", "transcode"]


# container -> libavformat muxer name
_FORMATS = {"mp4": "mp4", "mov": "mov", "3gp": "3gp", "mkv": "matroska", "webm": "webm"}


_ENCODERS = {"mp4": ("libx264", "aac"), "mov": ("libx264", "aac"), "3gp": ("libx264", "aac"),
            "mkv": ("libx264", "aac"), "webm": ("libvpx", "libopus")}


_COPY_CODECS = {
    "mp4": ({"h264", "hevc", "mpeg4", "av1", "vp9"}, {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"}),
    "mov": ({"h264", "hevc", "mpeg4", "av1", "vp9", "mjpeg", "prores"}, {"aac", "mp3", "ac3", "eac3", "alac"}),
    "3gp": ({"h264", "mpeg4", "h263"}, {"aac", "amr_nb", "amr_wb"}),
    "mkv": ({"h264", "hevc", "mpeg4", "av1", "vp8", "vp9", "mpeg1video", "mpeg2video", "theora"},
            {"aac", "mp3", "mp2", "opus", "vorbis", "ac3", "eac3", "flac", "alac"}),
    "webm": ({"vp8", "vp9", "av1"}, {"opus", "vorbis"}),
}


_X264 = {"preset": "veryfast"}


_CRF = "23"


_GOP_S = 10  # keyframe at least every 10 s in re-encoded output, so it can be stream-copied into segments later


_SHRINK_HEIGHTS = (720, 540, 480, 360, 288, 240, 180, 144)


_SHRINK_BPP = 0.03  # bits per pixel per frame below which shrink steps down a resolution before lowering quality


_MIN_VIDEO_BPS, _MIN_AUDIO_BPS, _MAX_AUDIO_BPS = 4_000, 8_000, 32_000  # shrink's floors and its audio ceiling


_AUDIO_SHARE = 0.25  # of the bit budget, for audio (between the floor and the ceiling)


_LOW_AUDIO_RATE = 16_000  # sample rate for audio below the ceiling


_CONTAINER_OVERHEAD = 0.95  # share of max_bytes that shrink plans for the streams


_LEAD_IN_ERRORS = 16  # undecodable packets tolerated right after a seek, before anything is written


@dataclass(frozen=True)
class Cut:
    """What was really written: times on the source's absolute timeline, mode "copy" or "reencode"."""

    path: str
    start_s: float
    end_s: float
    mode: str
    size: int
    has_audio: bool
    container: str


def plan_segments(duration_s: float, max_s: float, target_s: float | None = None, overlap_s: float = 0.0,
                  keyframes: list[float] | None = None, margin_s: float = 0.5) -> list[tuple[float, float]]:
    """Windows [start, end) covering [0, duration_s], each at most max_s - margin_s long.

    The fewest windows of at most target_s are made and their lengths equalised (no short tail); consecutive
    windows share overlap_s seconds. With keyframes, each boundary moves to the keyframe nearest its ideal place
    when that keeps the window within the limit and at least half a step long; otherwise it stays unsnapped.
    """
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    limit = max_s - margin_s
    if not limit > 0:
        raise ValueError(f"max_s ({max_s}) must exceed margin_s ({margin_s})")
    target = limit if target_s is None else min(target_s, limit)
    if not target > 0:
        raise ValueError(f"target_s must be positive, got {target_s}")
    if not 0 <= overlap_s < target:
        raise ValueError(f"overlap_s must be in [0, target_s) = [0, {target}), got {overlap_s}")
    if duration_s <= limit:
        return [(0.0, float(duration_s))]
    us = 1_000_000  # integer microseconds keep every comparison exact
    total, lim, tgt, ov = round(duration_s * us), math.floor(limit * us), math.floor(target * us), round(overlap_s * us)
    keys = sorted({round(k * us) for k in keyframes or () if 0 < k * us < total})
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        rest = total - start
        count = -(-(rest - ov) // (tgt - ov))  # windows the rest needs at target length
        if count <= 1:
            windows.append((start, total))
            break
        step = -(-(rest + (count - 1) * ov) // count) - ov  # equal lengths for the rest
        ideal = start + step
        fits = [k for k in keys if ideal - step // 2 <= k <= start + lim - ov and k > start]
        nxt = min(fits, key=lambda k: (abs(k - ideal), -k)) if fits else ideal
        windows.append((start, nxt + ov))
        start = nxt
    out = [(s / us, e / us) for s, e in windows]
    out[-1] = (out[-1][0], float(duration_s))
    return out


def _fits_container(video_codec: str, audio_codec: str | None, container: str = "mp4") -> bool:
    """Whether stream copy into this container can keep both codecs."""
    vset, aset = _COPY_CODECS[container]
    return video_codec in vset and (audio_codec is None or audio_codec in aset)


def _shrink_heights(source_height: int, max_height: int = 720, min_height: int = 144) -> list[int]:
    """The resolution ladder shrink walks down: even heights from min(source, max_height) to min_height."""
    top = _even(min(source_height, max_height))
    steps = [top] + [h for h in _SHRINK_HEIGHTS if min_height <= h < top]
    bottom = _even(min(min_height, top))
    return steps if steps[-1] == bottom else steps + [bottom]


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


def _name(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    return str(getattr(src, "name", None) or f"<{type(src).__name__}>")


class _Step:
    """The step an operation is in, so an error can name it."""

    def __init__(self, name: str, what: str):
        self.name, self.what, self.now = name, what, "open"

    def fail(self, detail: str) -> MediaError:
        return MediaError(f"{self.name}: {self.what}: {self.now}: {detail}")


@contextmanager
def _failing(name: str, what: str):
    """Turn every PyAV, I/O and decoding failure inside into a MediaError naming the input and the step."""
    step = _Step(name, what)
    try:
        yield step
    except MediaError:
        raise
    except av.error.FFmpegError as e:
        raise step.fail(e.strerror or type(e).__name__) from None
    except (OSError, ValueError, EOFError, IndexError, RuntimeError, ZeroDivisionError, OverflowError) as e:
        raise step.fail(f"{type(e).__name__}: {e}") from None


def _open(src):
    """Open a path or a file object (rewound) for reading, decoders threaded."""
    if isinstance(src, (str, os.PathLike)):
        c = av.open(os.fspath(src), mode="r")
    else:
        src.seek(0)
        c = av.open(src, mode="r")
    for stream in c.streams.video:
        stream.codec_context.thread_type = "AUTO"
    return c


@contextmanager
def _input(src):
    c = _open(src)
    try:
        yield c
    finally:
        c.close()


@contextmanager
def _atomic(dst: str):
    """A temporary path beside dst, moved onto dst on success and removed on failure."""
    folder, base = os.path.split(os.path.abspath(os.fspath(dst)))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=".part")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _output(path: str, container: str):
    options = {"movflags": "+faststart"} if container in ("mp4", "mov", "3gp") else {}
    return av.open(path, mode="w", format=_FORMATS[container], container_options=options)


def _check_container(container: str) -> None:
    if container not in _FORMATS:
        raise ValueError(f"container must be one of {sorted(_FORMATS)}, got {container!r}")


@dataclass(frozen=True)
class _Streams:
    """The streams an operation uses, the timeline origin, the frame interval and the stated duration."""

    video: av.VideoStream
    audio: av.AudioStream | None
    time_base: Fraction  # the video stream's
    origin: float  # the container's start time: absolute time = pts * time_base - origin
    frame_s: float
    declared_s: float | None  # where the video stream says it ends (else the container's duration)

    def t(self, pts: int, time_base) -> float:
        return float(pts * time_base) - self.origin


def _streams(c, step: _Step) -> _Streams:
    step.now = "streams"
    attached = av.stream.Disposition.attached_pic
    vs = next((s for s in c.streams.video if not (s.disposition & attached)), None)
    if vs is None:
        raise step.fail(f"no video stream (streams: {[s.type for s in c.streams] or 'none'})")
    audio = c.streams.audio[0] if c.streams.audio else None
    tb = _time_base(vs, step)
    rate = vs.average_rate or vs.guessed_rate or vs.base_rate
    frame_s = 1 / float(rate) if rate and 0 < float(rate) < 1000 else 0.04
    origin = c.start_time / av.time_base if c.start_time is not None else 0.0
    declared: float | None
    if vs.duration:
        declared = float((vs.start_time or 0) * tb) - origin + float(vs.duration * tb)
    else:
        declared = c.duration / av.time_base if c.duration else None
    return _Streams(vs, audio, tb, origin, frame_s, declared)


def _time_base(stream: av.VideoStream | av.AudioStream, step: _Step) -> Fraction:
    """A demuxed stream's time base: libavformat always sets one; PyAV types it Optional (unset output streams)."""
    if stream.time_base is None:
        raise step.fail(f"the {stream.type} stream states no time base")
    return stream.time_base


def _check_complete(step: _Step, s: _Streams, written_end: float, wanted_end: float) -> None:
    """MediaError when the data stops well before both the wanted end and the container's stated duration."""
    step.now = "completeness"
    expected = wanted_end if s.declared_s is None else min(wanted_end, s.declared_s)
    slack = 0.1 + 5 * s.frame_s  # B-frame reordering may end a stream copy a few frames early
    if written_end < expected - slack:
        raise step.fail(f"the data ends at {written_end:.3f} s, before {expected:.3f} s "
                        f"(stated duration {s.declared_s} s): truncated or damaged input")


def _empty(step: _Step, s: _Streams, data_end: float | None) -> MediaError:
    """The error for a segment with nothing in it, saying where the data ended and whether that is early."""
    if data_end is None:
        return step.fail("the segment came out empty: no video data from the start point on")
    early = s.declared_s is not None and data_end < s.declared_s - 0.1 - 5 * s.frame_s
    why = f", before the stated duration {s.declared_s:.3f} s: truncated or damaged input" if early else ""
    return step.fail(f"the segment came out empty: the video data ends at {data_end:.3f} s{why}")


def _seek(c, s: _Streams, t: float) -> None:
    c.seek(max(0, int((t + s.origin) / s.time_base)), stream=s.video, backward=True)


def _pts(packet) -> int | None:
    return packet.pts if packet.pts is not None else packet.dts


def _packet_end(s: _Streams, packet, t: float) -> float:
    return t + (float(packet.duration * packet.time_base) if packet.duration else s.frame_s)


def _result(path: str, start: float, end: float, mode: str, has_audio: bool, container: str) -> Cut:
    return Cut(path=os.fspath(path), start_s=round(float(start), 6), end_s=round(float(end), 6), mode=mode,
               size=os.path.getsize(path), has_audio=has_audio, container=container)


def keyframe_times(src) -> list[float]:
    """Presentation times (s) of the video stream's keyframes, read from packets without decoding."""
    with _failing(_name(src), "keyframe index") as step, _input(src) as c:
        s = _streams(c, step)
        step.now = "demux"
        times: set[float] = set()
        last_end = 0.0
        for packet in c.demux(s.video):
            pts = _pts(packet)
            if pts is None or not packet.size:
                continue
            t = s.t(pts, packet.time_base)
            last_end = max(last_end, _packet_end(s, packet, t))
            if packet.is_keyframe:
                times.add(round(t, 6))
        if not times:
            raise step.fail("the video stream has no keyframe")
        _check_complete(step, s, last_end, math.inf)
        return sorted(times)


def cut(src, start_s: float, end_s: float, dst: str, mode: str = "auto", container: str = "mp4") -> Cut:
    """Write [start_s, end_s) of src to dst by stream copy or re-encode ("auto": copy when start_s is a keyframe).

    Copy starts at the keyframe at or before start_s (Cut.start_s says which) and stops before the first video
    packet presented at or after end_s, so with B-frames it can end a frame or two early. Re-encode is exact to
    the frame: the frame showing at start_s opens the segment. "auto" also re-encodes when the codecs do not fit
    the container, the keyframe at start_s does not decode on its own or the copy fails.
    """
    if mode not in ("auto", "copy", "reencode"):
        raise ValueError(f"mode must be auto, copy or reencode, got {mode!r}")
    _check_container(container)
    if not 0 <= start_s < end_s:
        raise ValueError(f"need 0 <= start_s < end_s, got [{start_s}, {end_s})")
    name, what = _name(src), f"cut [{start_s:.3f}, {end_s:.3f}) s ({mode})"
    if mode != "reencode":
        with _failing(name, what) as step:
            key_t = _copy_start(src, start_s, container, step, strict=mode == "copy")
        if key_t is not None:
            try:
                with _failing(name, what) as step, _atomic(dst) as tmp:
                    start, end, has_audio = _copy(src, tmp, key_t, start_s, end_s, container, step)
                return _result(dst, start, end, "copy", has_audio, container)
            except MediaError:
                if mode == "copy":
                    raise  # "auto" tries a re-encode, which raises its own error if the input is at fault
    with _failing(name, what) as step, _atomic(dst) as tmp:
        start, end, has_audio = _reencode(src, tmp, start_s, end_s, step, _Encoding(container))
    return _result(dst, start, end, "reencode", has_audio, container)


def _copy_start(src, start_s: float, container: str, step: _Step, strict: bool) -> float | None:
    """The keyframe time a stream copy from start_s begins at; None when "auto" should re-encode instead."""
    c = _open(src)
    try:
        s = _streams(c, step)
        vcodec = s.video.codec_context.name
        acodec = s.audio.codec_context.name if s.audio is not None else None
        if not _fits_container(vcodec, acodec, container):
            if strict:
                raise step.fail(f"stream copy impossible: {vcodec}/{acodec or 'no audio'} does not fit {container}")
            return None
        tol = s.frame_s * 1.01
        step.now = "seek"
        landing = None
        try:
            if start_s > 0:
                _seek(c, s, start_s + tol / 2)
            landing = _first_keyframe(c, s)
        except av.error.FFmpegError:
            pass  # some demuxers cannot seek (flv without an index): scan from the start instead
        if landing is None or landing[0] > start_s + tol:
            step.now = "keyframe scan"
            c.close()
            c = _open(src)
            s = _streams(c, step)
            landing = _scan_keyframe(c, s, start_s + tol / 2)
            if landing is None:
                raise step.fail(f"no keyframe at or before {start_s:.3f} s")
        t, packet = landing
        if not strict and abs(t - start_s) > tol:
            return None
        step.now = "keyframe check"
        ctx = s.video.codec_context
        try:
            frames = ctx.decode(packet) + ctx.decode(None)
        except av.error.FFmpegError:
            frames = []
        if not frames or not frames[0].key_frame:
            if strict:
                raise step.fail(f"the packet at {t:.3f} s is flagged as a keyframe but does not decode on its own "
                                f"(the keyframe index lies)")
            return None
        return t
    finally:
        c.close()


def _first_keyframe(c, s: _Streams):
    """(time, packet) of the first video keyframe packet from the current position."""
    for packet in c.demux(s.video):
        pts = _pts(packet)
        if packet.size and pts is not None and packet.is_keyframe:
            return s.t(pts, packet.time_base), packet
    return None


def _scan_keyframe(c, s: _Streams, at: float):
    """(time, packet) of the last keyframe at or before `at`, reading packets from the start."""
    best = None
    for packet in c.demux(s.video):
        pts = _pts(packet)
        if not packet.size or pts is None or not packet.is_keyframe:
            continue
        t = s.t(pts, packet.time_base)
        if t > at:
            break
        best = (t, packet)
    return best


def _copy(src, path: str, key_t: float, start_s: float, end_s: float, container: str,
          step: _Step) -> tuple[float, float, bool]:
    """Remux packets from the keyframe at key_t until end_s into path; returns (start, end, has_audio) written."""
    c = _open(src)
    try:
        s = _streams(c, step)
        if key_t > 0:
            step.now = "seek"
            try:
                _seek(c, s, max(0.0, key_t - 1.0))  # a second early, so audio stored before the keyframe is kept
            except av.error.FFmpegError:
                c.close()
                c = _open(src)
                s = _streams(c, step)
        vs, audio = s.video, s.audio
        tol = s.frame_s / 2
        step.now = "mux"
        with _output(path, container) as out:
            ov = out.add_stream_from_template(vs)
            oa = out.add_stream_from_template(audio) if audio is not None else None
            started = video_done = False
            audio_done = audio is None
            held_audio: list = []
            v_offset = a_offset = 0
            video_packets = audio_packets = 0
            last_end = key_t
            data_end = None
            for packet in c.demux([x for x in (vs, audio) if x is not None]):
                pts = _pts(packet)
                if not packet.size or pts is None:
                    continue
                t = s.t(pts, packet.time_base)
                if packet.stream_index == vs.index:
                    data_end = max(data_end or t, _packet_end(s, packet, t))
                    if video_done:
                        continue
                    if not started:
                        if not (packet.is_keyframe and abs(t - key_t) <= tol):
                            continue
                        started, v_offset = True, pts
                        if audio is not None:
                            a_offset = round(pts * s.time_base / _time_base(audio, step))
                            for held in held_audio:
                                _mux_shifted(out, held, oa, a_offset)
                            audio_packets += len(held_audio)
                            held_audio.clear()
                    elif t >= end_s - 1e-6:
                        video_done = True
                        if audio_done:
                            break
                        continue
                    elif t < key_t - tol:
                        continue  # a leading picture of an open GOP: it needs the GOP before, which is not copied
                    _mux_shifted(out, packet, ov, v_offset)
                    video_packets += 1
                    last_end = max(last_end, _packet_end(s, packet, t))
                elif not audio_done:
                    if t < key_t - 1e-6:
                        continue
                    if t >= end_s - 1e-6:
                        audio_done = True
                        if video_done:
                            break
                    elif started:
                        _mux_shifted(out, packet, oa, a_offset)
                        audio_packets += 1
                    else:
                        held_audio.append(packet)
            if not video_packets or last_end <= start_s + tol:
                raise _empty(step, s, data_end)
        _check_complete(step, s, last_end, end_s)
        return key_t, last_end, audio_packets > 0
    finally:
        c.close()


def _mux_shifted(out, packet, stream, offset: int) -> None:
    if packet.pts is not None:
        packet.pts -= offset
    if packet.dts is not None:
        packet.dts -= offset
    packet.stream = stream
    out.mux(packet)


@dataclass(frozen=True)
class _Encoding:
    """How a re-encode writes: container, output height, bitrates (None: constant quality), audio channels, rate."""

    container: str = "mp4"
    height: int | None = None
    video_bps: int | None = None
    audio_bps: int | None = None
    mono: bool = False
    audio_rate: int | None = None


def _reencode(src, path: str, start_s: float, end_s: float, step: _Step, enc: _Encoding) -> tuple[float, float, bool]:
    """Decode src over [start_s, end_s) and encode it into path; returns (start, end, has_audio) written."""
    c = _open(src)
    try:
        s = _streams(c, step)
        if start_s > 0:
            c = _position(c, src, s, start_s, step)
            s = _streams(c, step)
        return _encode_range(c, s, path, start_s, end_s, enc, step)
    finally:
        c.close()


def _position(c, src, s: _Streams, start_s: float, step: _Step):
    """Seek so decoding begins on a keyframe that really decodes, at or before start_s; else reopen at the start."""
    tol = s.frame_s * 1.01
    for back in (1.0, 10.0, 60.0):
        target = max(0.0, start_s - back)
        try:
            step.now = "seek"
            _seek(c, s, target)
            step.now = "decode"
            first = next(c.decode(s.video), None)
            if (first is not None and first.key_frame and first.time is not None
                    and first.time - s.origin <= start_s + tol):
                step.now = "seek"
                _seek(c, s, target)
                return c
        except av.error.FFmpegError:
            break
        if target == 0.0:
            break
    c.close()
    return _open(src)


def _encode_range(c, s: _Streams, path: str, start_s: float, end_s: float, enc: _Encoding,
                  step: _Step) -> tuple[float, float, bool]:
    vs, audio = s.video, s.audio
    vcodec, acodec = _ENCODERS[enc.container]
    src_w, src_h = vs.codec_context.width, vs.codec_context.height
    if not src_w or not src_h:
        raise step.fail("the video stream states no frame size")
    out_h = _even(min(src_h, enc.height) if enc.height else src_h)
    out_w = _even(src_w * out_h / src_h)
    rate = vs.average_rate or vs.guessed_rate or Fraction(25)
    tb = s.time_base if s.time_base <= Fraction(1, 1000) else Fraction(1, 90000)  # avi counts whole frames
    step.now = "encoder setup"
    with _output(path, enc.container) as out:
        options = dict(_X264) if vcodec == "libx264" else {"deadline": "realtime", "cpu-used": "8"}
        options["g"] = str(max(1, round(float(rate) * _GOP_S)))
        if enc.video_bps:
            options.update(maxrate=str(int(enc.video_bps * 1.2)), bufsize=str(int(enc.video_bps * 2)))
        elif vcodec == "libx264":
            options["crf"] = _CRF
        ov = out.add_stream(vcodec, rate=rate, options=options)
        ov.width, ov.height, ov.pix_fmt = out_w, out_h, "yuv420p"
        ov.codec_context.time_base = tb
        if enc.video_bps:
            ov.codec_context.bit_rate = int(enc.video_bps)
        oa = None
        if audio is not None:
            in_rate = audio.codec_context.sample_rate or 44100
            layout = "mono" if enc.mono or (audio.codec_context.channels or 1) < 2 else "stereo"
            out_rate = 48000 if acodec == "libopus" else min(enc.audio_rate or in_rate, in_rate, 48000)
            oa = out.add_stream(acodec, rate=out_rate)
            oa.layout = layout
            oa.codec_context.bit_rate = enc.audio_bps or (64_000 if layout == "mono" else 96_000)
        state = {"frames": 0, "last_pts": -1, "last_t": start_s}
        audio_packets = 0

        def emit(frame, at: float) -> None:
            pts = round((at - start_s) / tb)
            if pts <= state["last_pts"]:
                return
            frame.pts, frame.time_base = pts, tb
            frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder place its own keyframes
            step.now = "encode"
            for packet in ov.encode(frame):
                out.mux(packet)
            state.update(frames=state["frames"] + 1, last_pts=pts, last_t=at)

        held = None  # the latest frame at or before start_s: it is what shows at start_s
        errors = [0]
        data_end = next_audio = None
        video_done, audio_done = False, audio is None
        for packet in c.demux([x for x in (vs, audio) if x is not None]):
            step.now = "decode"
            if packet.stream_index == vs.index:
                if video_done:
                    continue
                for frame in _decode(packet, state["frames"] == 0, errors):
                    if frame.time is None:
                        continue
                    t = frame.time - s.origin
                    data_end = max(data_end or t, t + s.frame_s)
                    if t < start_s + 1e-6:
                        held = frame
                        continue
                    if t >= end_s - 1e-6:
                        video_done = True
                        break
                    if held is not None:
                        emit(held, start_s)
                        held = None
                    emit(frame, t)
            elif not audio_done:
                for frame in _decode(packet, audio_packets == 0, errors):
                    if frame.time is None or not frame.samples:
                        continue
                    t0, sr, n = frame.time - s.origin, frame.sample_rate, frame.samples
                    if t0 >= end_s - 1e-6:
                        audio_done = True
                        break
                    i0 = max(0, round((start_s - t0) * sr))
                    i1 = n if math.isinf(end_s) else min(n, round((end_s - t0) * sr))
                    if i1 <= i0:
                        continue
                    pts = round((t0 + i0 / sr - start_s) * sr)
                    if next_audio is not None and abs(pts - next_audio) <= sr // 25:
                        pts = next_audio  # timestamp rounding (flv counts ms): keep the samples back to back
                    elif next_audio is not None and pts < next_audio:
                        continue  # overlaps what was written
                    next_audio = pts + i1 - i0
                    part = frame if (i0, i1) == (0, n) else _slice_audio(frame, i0, i1)
                    part.pts, part.time_base = pts, Fraction(1, sr)
                    step.now = "encode audio"
                    assert oa is not None  # audio_done starts True without an audio stream, else oa was added
                    for p in oa.encode(part):
                        out.mux(p)
                        audio_packets += 1
            if video_done and audio_done:
                break
        if held is not None and held.time - s.origin + s.frame_s > start_s + 1e-6:
            emit(held, start_s)  # no later frame came: the held one fills the range
        if not state["frames"]:
            raise _empty(step, s, data_end)
        step.now = "encode"
        for packet in ov.encode(None):
            out.mux(packet)
        if oa is not None:
            for p in oa.encode(None):
                out.mux(p)
                audio_packets += 1
        step.now = "mux"
    written_end = min(end_s, state["last_t"] + s.frame_s)
    _check_complete(step, s, written_end, end_s)
    return start_s, written_end, audio_packets > 0


def _decode(packet, lead_in: bool, errors: list[int]) -> list:
    """Decode a packet; before a stream's first output (a seek may land mid-packet) a few bad packets are skipped."""
    try:
        return packet.decode()
    except av.error.InvalidDataError:
        errors[0] += 1
        if lead_in and errors[0] <= _LEAD_IN_ERRORS:
            return []
        raise


def _slice_audio(frame, i0: int, i1: int):
    """Samples [i0, i1) of an audio frame as a new frame."""
    data = frame.to_ndarray()
    ch = 1 if frame.format.is_planar else frame.layout.nb_channels
    part = np.ascontiguousarray(data[:, i0 * ch : i1 * ch])
    out = av.AudioFrame.from_ndarray(part, format=frame.format.name, layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    return out


def transcode(src, dst: str, container: str = "mp4") -> Cut:
    """Re-encode src whole into container (mp4: h264 + aac) at its own resolution."""
    _check_container(container)
    with _failing(_name(src), f"transcode to {container}") as step, _atomic(dst) as tmp:
        start, end, has_audio = _reencode(src, tmp, 0.0, math.inf, step, _Encoding(container))
    return _result(dst, start, end, "reencode", has_audio, container)


def shrink(src, dst: str, max_bytes: int, max_height: int = 720, min_height: int = 144) -> Cut:
    """Re-encode src (mp4: h264 + mono aac) down a ladder of resolutions and bitrates until it is <= max_bytes.

    The first bitrate spends max_bytes over the duration, less container overhead, at the largest height that
    still gets enough bits per pixel. Each try that comes out too big steps one height down and scales the
    bitrate by the miss; after as many tries as heights (or when the bitrate reaches the floor) the last try is
    the smallest height at the floor bitrates, and if that is too big MediaError names the limit and its size.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if not 2 <= min_height <= max_height:
        raise ValueError(f"need 2 <= min_height <= max_height, got {min_height}, {max_height}")
    with _failing(_name(src), f"shrink to at most {max_bytes} bytes") as step:
        with _input(src) as c:
            s = _streams(c, step)
            src_w, src_h = s.video.codec_context.width, s.video.codec_context.height
            duration = s.declared_s or (float(s.video.duration * s.time_base) if s.video.duration else None)
            has_audio = s.audio is not None
        if not duration or not src_w or not src_h:
            raise step.fail("the duration or the frame size could not be read")
        ladder = _shrink_heights(src_h, max_height, min_height)
        budget = max_bytes * 8 * _CONTAINER_OVERHEAD / duration
        audio_bps = min(_MAX_AUDIO_BPS, max(_MIN_AUDIO_BPS, budget * _AUDIO_SHARE)) if has_audio else 0
        video_bps = budget - audio_bps
        pixels_per_s = [_even(src_w * h / src_h) * h / s.frame_s for h in ladder]
        rung = next((i for i, px in enumerate(pixels_per_s) if video_bps / px >= _SHRINK_BPP), len(ladder) - 1)
        tried: list[str] = []
        with _atomic(dst) as tmp:
            while True:
                floor = video_bps <= _MIN_VIDEO_BPS or len(tried) >= len(ladder)
                if floor:
                    rung, video_bps = len(ladder) - 1, _MIN_VIDEO_BPS
                    audio_bps = min(audio_bps, _MIN_AUDIO_BPS)
                enc = _Encoding("mp4", ladder[rung], int(video_bps), int(audio_bps) or None, mono=True,
                                audio_rate=_LOW_AUDIO_RATE if audio_bps < _MAX_AUDIO_BPS else None)
                start, end, has_audio = _reencode(src, tmp, 0.0, math.inf, step, enc)
                size = os.path.getsize(tmp)
                tried.append(f"{ladder[rung]}p, {video_bps / 1000:.0f}+{audio_bps / 1000:.0f} kbit/s: {size} bytes")
                if size <= max_bytes:
                    break
                if floor:
                    step.now = "fit"
                    raise step.fail(f"nothing fits the limit of {max_bytes} bytes: the smallest encode measured "
                                    f"{size} bytes (tried {'; '.join(tried)})")
                miss = max_bytes / size * 0.9
                video_bps, rung = video_bps * miss, min(rung + 1, len(ladder) - 1)
                audio_bps = max(_MIN_AUDIO_BPS, audio_bps * miss) if audio_bps else 0
    return _result(dst, start, end, "reencode", has_audio, "mp4")
