"""The trinity dialect (Trinity video input)."""

from __future__ import annotations

from tasks.dialects.base import VideoRef


def trinity_part(v: VideoRef) -> dict:
    """Trinity file part (seed 002)."""
    return {"type": "file", "file_name": v.file_name, "file_url": v.url}
