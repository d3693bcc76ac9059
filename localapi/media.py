"""Decoding the videos localapi is given: facts, scene changes and Gemini-rule token counts."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import av
import numpy as np

# Mean absolute RGB difference (0-255) between consecutive 32x24 thumbnails that marks a cut.
SCENE_THRESHOLD = 30.0
MOTION_THRESHOLD = 1.0  # a mean difference above this within a scene: something moves
BRIGHT = 200  # all three channels above this: a bright object (the samples' moving white box)
TIMESTAMP_TOKENS = 7
AUDIO_TOKENS = 32


class MediaError(Exception):
    """A video PyAV cannot decode; the message is PyAV's reason, never the data."""


@dataclass(frozen=True)
class Scene:
    """One scene: its span (seconds from the stream's start), median colour, motion, and its bright object."""

    start: float
    end: float
    rgb: tuple[int, int, int]
    motion: float  # mean absolute change between consecutive frames within the scene (0-255)
    bright_at: tuple[float, float] | None  # (x, y) in [0, 1] of the bright pixels in the scene's first frame

    @property
    def moving(self) -> bool:
        return self.motion > MOTION_THRESHOLD


@dataclass(frozen=True)
class VideoFacts:
    """What decoding one video found; times are seconds from the video stream's start."""

    duration: float
    width: int
    height: int
    video_codec: str
    audio_codec: str | None
    seconds: int  # distinct whole seconds holding a decoded frame: the frames Gemini samples at 1 fps
    scene_changes: list[float] = field(default_factory=list)
    scenes: list[Scene] = field(default_factory=list)

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    def tokens(self, frame_tokens: int) -> int:
        """Prompt tokens by the Gemini rules: per sampled second a frame, a timestamp and (with audio) audio."""
        return self.seconds * (frame_tokens + TIMESTAMP_TOKENS + (AUDIO_TOKENS if self.has_audio else 0))

    def audio_tokens(self) -> int:
        """The audio share of `tokens`: 32 per sampled second of a video with an audio track."""
        return self.seconds * AUDIO_TOKENS if self.has_audio else 0

    def describe(self, index: int, label: str) -> str:
        """One sentence of facts, e.g. `video 1 (clip.mp4): duration 6.00 s, ..., scene changes at 2.0 s.`"""
        scenes = len(self.scene_changes) + 1
        text = (
            f"video {index} ({label}): duration {self.duration:.2f} s, {self.width}x{self.height}, "
            f"video {self.video_codec}, {f'audio {self.audio_codec}' if self.has_audio else 'no audio'}, "
            f"{scenes} scene{'s' if scenes > 1 else ''}"
        )
        if self.scene_changes:
            text += "; scene changes at " + ", ".join(f"{t:.1f} s" for t in self.scene_changes)
        return text + "."


def analyse(data: bytes) -> VideoFacts:
    """Decode every frame of the first video stream from memory."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise MediaError("the file holds no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
            tb = stream.time_base  # None never for a demuxed stream; without one the first frame sets the start
            start = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else None
            times: list[float] = []
            changes: list[float] = []
            pieces: list[tuple[float, list, list, tuple | None]] = []  # per scene: start, colours, changes, bright
            prev = None
            last_len = 0.0
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if start is None:
                    start = frame.time
                t = max(0.0, frame.time - start)
                thumb = frame.to_ndarray(format="rgb24", width=32, height=24).astype(np.int16)
                diff = float(np.abs(thumb - prev).mean()) if prev is not None else 0.0
                if prev is None or diff > SCENE_THRESHOLD:
                    if prev is not None:
                        changes.append(round(t, 1))
                    pieces.append((round(t, 1) if prev is not None else 0.0, [], [], _bright(thumb)))
                else:
                    pieces[-1][2].append(diff)
                pieces[-1][1].append(np.median(thumb.reshape(-1, 3), axis=0))
                prev = thumb
                times.append(t)
                last_len = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
            width, height, codec = stream.codec_context.width, stream.codec_context.height, stream.codec_context.name
    except av.error.FFmpegError as exc:
        raise MediaError(exc.strerror or str(exc)) from None
    except ValueError as exc:
        raise MediaError(str(exc)) from None
    if not times:
        raise MediaError("no video frame could be decoded")
    if not last_len:
        last_len = times[-1] - times[-2] if len(times) > 1 else (1 / float(stream.average_rate or 1))
    duration = round(times[-1] + last_len, 3)
    ends = [p[0] for p in pieces[1:]] + [duration]
    scenes = [Scene(start, end, _median_rgb(colours), round(float(np.mean(moves)), 2) if moves else 0.0, bright)
              for (start, colours, moves, bright), end in zip(pieces, ends, strict=True)]
    return VideoFacts(
        duration=duration,
        width=width,
        height=height,
        video_codec=codec,
        audio_codec=audio,
        seconds=max(1, len({int(t) for t in times})),
        scene_changes=changes,
        scenes=scenes,
    )


def _median_rgb(colours: list) -> tuple[int, int, int]:
    """The per-channel median of a scene's frame colours (each an RGB triple)."""
    r, g, b = np.median(colours, axis=0)
    return int(r), int(g), int(b)


def _bright(thumb: np.ndarray) -> tuple[float, float] | None:
    """Where the bright pixels of a thumbnail are, as (x, y) in [0, 1], or None."""
    ys, xs = np.nonzero((thumb > BRIGHT).all(axis=2))
    if not len(xs):
        return None
    return round(float(xs.mean() + 0.5) / thumb.shape[1], 3), round(float(ys.mean() + 0.5) / thumb.shape[0], 3)


def ceil_tokens(text: str) -> int:
    """Text tokens by the rule the pipeline's estimator shares: ceil(characters / 4)."""
    return math.ceil(len(text) / 4)
