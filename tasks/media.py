"""Probe videos with PyAV, name their MIME types per dialect, estimate prompt tokens by the Gemini rules."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import av

from .errors import MediaError

# The seeds' MIME names: Gemini/GDC (001, 004) and Lunos (000) say video/mov; Trinity (002) says video/quicktime.
GEMINI_MIME = {"mp4": "video/mp4", "mov": "video/mov", "mpeg": "video/mpeg", "mpg": "video/mpg",
               "avi": "video/avi", "flv": "video/x-flv", "webm": "video/webm", "wmv": "video/wmv",
               "3gp": "video/3gpp"}
GDC_FORMAT = {"mp4": "mp4", "mov": "mov", "mpeg": "mpeg", "mpg": "mpg", "avi": "avi", "flv": "flv",
              "webm": "webm", "wmv": "wmv", "3gp": "3gpp"}
TRINITY_MIME = {**GEMINI_MIME, "mov": "video/quicktime", "mpg": "video/mpeg", "avi": "video/x-msvideo",
                "wmv": "video/x-ms-wmv"}
OPENAI_MIME = {**GEMINI_MIME, "mpg": "video/mpeg"}

TIMESTAMP_TOKENS = 7
AUDIO_TOKENS_PER_S = 32


def mime_for(dialect: str, ext: str) -> str:
    """The MIME type a dialect expects for a file extension."""
    table = {"trinity": TRINITY_MIME, "openai": OPENAI_MIME}.get(dialect, GEMINI_MIME)
    return table.get(ext.lower(), f"video/{ext.lower() or 'mp4'}")


@dataclass(frozen=True)
class Probe:
    """What PyAV read from a video."""

    duration_s: float
    has_audio: bool
    width: int
    height: int
    video_codec: str
    audio_codec: str | None
    fps: float

    def to_dict(self) -> dict:
        return asdict(self)


def probe(fileobj, name: str) -> Probe:
    """Read duration, streams and codecs and decode one frame; MediaError naming the file if that fails."""
    try:
        with av.open(fileobj, mode="r") as c:
            vs = next((s for s in c.streams if s.type == "video"), None)
            if vs is None:
                raise MediaError(f"{name}: no video stream (streams: {[s.type for s in c.streams] or 'none'})")
            audio = next((s for s in c.streams if s.type == "audio"), None)
            fps = float(vs.average_rate or vs.base_rate or vs.guessed_rate or 0) or 0.0
            duration = None
            if vs.duration is not None and vs.time_base is not None:
                duration = float(vs.duration * vs.time_base)
            if not duration and c.duration is not None:
                duration = c.duration / av.time_base
            first = None
            for frame in c.decode(vs):
                first = frame
                break
            if first is None:
                raise MediaError(f"{name}: the video stream holds no decodable frame")
            if not duration:
                duration = _demux_duration(c, vs)
            if not duration or duration <= 0:
                raise MediaError(f"{name}: duration could not be read")
            return Probe(duration_s=round(duration, 3), has_audio=audio is not None,
                         width=vs.codec_context.width or first.width, height=vs.codec_context.height or first.height,
                         video_codec=vs.codec_context.name, audio_codec=audio.codec_context.name if audio else None,
                         fps=round(fps, 3))
    except MediaError:
        raise
    except av.error.FFmpegError as e:
        raise MediaError(f"{name}: not a decodable video: {e.strerror or type(e).__name__}") from None
    except (ValueError, OSError, EOFError, IndexError) as e:
        raise MediaError(f"{name}: not a decodable video: {type(e).__name__}: {e}") from None


def _demux_duration(c, vs) -> float | None:
    last = None
    for packet in c.demux(vs):
        if packet.pts is not None and packet.time_base is not None:
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            last = end if last is None else max(last, end)
    return last


def sampled_seconds(duration_s: float, fps: float) -> int:
    """Seconds sampled at 1 frame/s: the distinct whole seconds that hold a frame."""
    frame = 1.0 / fps if fps > 0 else 0.0
    return max(1, math.floor(max(0.0, duration_s - frame) + 1e-9) + 1)


def text_tokens(*texts: str) -> int:
    """Text tokens as the offline provider counts them: ceil(chars / 4) per text."""
    return sum(math.ceil(len(t) / 4) for t in texts if t)


def video_tokens(p: Probe, frame_tokens: int = 258) -> int:
    """Gemini rules (seeds 001/004): per sampled second a frame, a timestamp and, with audio, 32 audio tokens."""
    per_second = frame_tokens + TIMESTAMP_TOKENS + (AUDIO_TOKENS_PER_S if p.has_audio else 0)
    return sampled_seconds(p.duration_s, p.fps) * per_second
