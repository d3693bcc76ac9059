"""Probe videos with PyAV: duration, streams, codecs, one decoded frame."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import av

from tasks.errors import MediaError


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
