"""media.audio drop: the same video with its audio stream removed, by stream copy (no re-encoding)."""

from __future__ import annotations

import os

import av

from tasks.errors import MediaError

# the container names PyAV writes, by file extension (as tasks/media/segment.py writes them)
FORMATS = {"mp4": "mp4", "mov": "mov", "3gp": "3gp", "webm": "webm", "mkv": "matroska", "avi": "avi",
           "mpeg": "mpeg", "mpg": "mpeg", "flv": "flv", "wmv": "asf"}


def drop_audio(src: str, dst: str, container: str) -> str:
    """Copy `src`'s first video stream alone into `dst` (a `container` file); MediaError naming the step otherwise."""
    fmt = FORMATS.get(container)
    if fmt is None:
        raise MediaError(f"{os.path.basename(src)}: cannot drop audio from a {container} file "
                         f"(containers: {', '.join(sorted(FORMATS))})")
    tmp = f"{dst}.partial"
    try:
        with av.open(src) as c:
            if not c.streams.video:
                raise MediaError(f"{os.path.basename(src)}: no video stream to keep")
            vs = c.streams.video[0]
            options = {"movflags": "+faststart"} if fmt in ("mp4", "mov", "3gp") else {}
            with av.open(tmp, mode="w", format=fmt, container_options=options) as out:
                ov = out.add_stream_from_template(vs)
                for packet in c.demux(vs):
                    if packet.dts is None and packet.pts is None:
                        continue
                    packet.stream = ov
                    out.mux(packet)
        os.replace(tmp, dst)
    except av.error.FFmpegError as e:
        raise MediaError(f"{os.path.basename(src)}: dropping the audio stream failed: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst
