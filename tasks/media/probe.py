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


MAX_SECONDS_PER_FRAME = 60.0  # an average frame longer than a minute: a timeline the stream's frames cannot fill
MIN_BYTES_PER_SECOND = 8.0    # below 64 bit/s over more than ten minutes no encoder stores a moving picture
BACKED_CHECK_AFTER_S = 600.0


def check_backed(name: str, duration: float, frames: int, size: int | None) -> None:
    """MediaError when the duration a header claims is more than its frame count and file size can back."""
    if duration <= BACKED_CHECK_AFTER_S:
        return
    short_of_frames = frames > 0 and duration / frames > MAX_SECONDS_PER_FRAME
    short_of_bytes = size is not None and size > 0 and size / duration < MIN_BYTES_PER_SECOND
    if short_of_frames or short_of_bytes:
        raise MediaError(f"{name}: its header claims {duration:,.0f} s, which {frames or 'an unknown number of'} "
                         f"frames in {size if size is not None else 'an unknown number of'} bytes cannot back; "
                         "not sent (a damaged or crafted header)")


def probe(fileobj, name: str, size: int | None = None) -> Probe:
    """Read duration, streams and codecs and decode one frame; MediaError naming the file if that fails, or if the
    duration is more than the file's `size` and frame count can back."""
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
            check_backed(name, duration, int(vs.frames or 0), size)
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
