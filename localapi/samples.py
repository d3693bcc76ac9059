"""Synthetic sample videos made with PyAV: solid-colour scenes with a moving box, optional tone."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# container -> (video codec, audio codec or None when the container takes no audio we can write)
CONTAINER_CODECS: dict[str, tuple[str, str | None]] = {
    "mp4": ("libx264", "aac"),
    "mov": ("libx264", "aac"),
    "webm": ("libvpx", "libopus"),
    "mkv": ("libx264", "aac"),
    "avi": ("mpeg4", "mp2"),
    "flv": ("flv", "aac"),
    "mpeg": ("mpeg2video", "mp2"),
    "mpg": ("mpeg2video", "mp2"),
    "wmv": ("wmv2", "wmav2"),
    "3gp": ("mpeg4", "aac"),
}


FORMAT_NAMES = {"mpeg": "mpeg", "mpg": "mpeg", "wmv": "asf", "3gp": "3gp", "mkv": "matroska"}


PALETTE = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (220, 200, 40), (160, 40, 180), (30, 190, 190)]


@dataclass(frozen=True)
class SampleSpec:
    """What a sample video holds: its length, scene length, frame size and whether it has a tone."""

    seconds: float = 6.0
    scene_seconds: float = 2.0
    width: int = 320
    height: int = 240
    fps: int = 12
    audio: bool = True

    @property
    def scene_changes(self) -> list[float]:
        """Start times of every scene after the first."""
        n = math.ceil(self.seconds / self.scene_seconds)
        return [round(i * self.scene_seconds, 3) for i in range(1, n) if i * self.scene_seconds < self.seconds]


def _frame(spec: SampleSpec, index: int) -> np.ndarray:
    t = index / spec.fps
    colour = PALETTE[int(t // spec.scene_seconds) % len(PALETTE)]
    img = np.empty((spec.height, spec.width, 3), dtype=np.uint8)
    img[:] = colour
    box = max(8, spec.height // 6)
    x = int((spec.width - box) * ((t * 0.37) % 1.0))
    y = int((spec.height - box) * ((t * 0.23) % 1.0))
    img[y : y + box, x : x + box] = 255
    return img


def write_sample(target, container: str = "mp4", spec: SampleSpec = SampleSpec()) -> None:
    """Encode a sample video into a path or a binary file object."""
    vcodec, acodec = CONTAINER_CODECS[container]
    fmt = FORMAT_NAMES.get(container, container)
    if vcodec == "mpeg2video" and spec.fps not in (24, 25, 30, 50, 60):
        spec = replace(spec, fps=25)  # MPEG-2 allows only the broadcast frame rates
    with av.open(target, mode="w", format=fmt) as out:
        vs = out.add_stream(vcodec, rate=spec.fps)
        assert isinstance(vs, av.VideoStream)  # CONTAINER_CODECS names a video encoder first
        vs.width, vs.height = spec.width, spec.height
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = Fraction(1, spec.fps)
        streams: list[av.VideoStream | av.AudioStream] = [vs]
        a_stream = None
        if spec.audio and acodec:
            rate = 48000 if acodec == "libopus" else 44100
            a_stream = out.add_stream(acodec, rate=rate)
            assert isinstance(a_stream, av.AudioStream)  # and an audio encoder second
            a_stream.layout = "mono"
            if acodec == "wmav2":
                a_stream.codec_context.bit_rate = 64000
            streams.append(a_stream)
        n_frames = int(round(spec.seconds * spec.fps))
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(_frame(spec, i), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, spec.fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if a_stream is not None:
            _write_tone(out, a_stream, spec.seconds)


def _write_tone(out, stream, seconds: float) -> None:
    rate = stream.codec_context.sample_rate
    fmt = stream.codec_context.format.name if stream.codec_context.format else "fltp"
    frame_size = stream.codec_context.frame_size or 1024
    total = int(seconds * rate)
    pts = 0
    while pts < total:
        n = min(frame_size, total - pts)
        t = (np.arange(pts, pts + n) / rate).astype(np.float32)
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        if fmt in ("s16", "s16p"):
            data = (wave * 32767).astype(np.int16).reshape(1, -1)
        else:
            data = wave.reshape(1, -1)
        af = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        af.sample_rate = rate
        af.pts = pts
        af.time_base = Fraction(1, rate)
        for packet in stream.encode(af):
            out.mux(packet)
        pts += n
    for packet in stream.encode():
        out.mux(packet)


def sample_bytes(container: str = "mp4", spec: SampleSpec = SampleSpec()) -> bytes:
    """A sample video as bytes."""
    buf = io.BytesIO()
    write_sample(buf, container, spec)
    return buf.getvalue()


def write_sample_file(path: str | Path, spec: SampleSpec = SampleSpec()) -> Path:
    """Write a sample video to a path whose extension names the container."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = path.suffix.lstrip(".").lower()
    path.write_bytes(sample_bytes(container, spec))
    return path
