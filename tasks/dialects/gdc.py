"""The gdc dialect (Gemini on GDC video understanding)."""

from __future__ import annotations

from tasks.dialects.base import VideoRef
from tasks.dialects.mime import GDC_FORMAT


def gdc_part(v: VideoRef) -> dict:
    """GDC part (seeds 001/004): input_video for inline data, video_url for a bucket object."""
    if v.inline is not None or v.url.startswith("data:"):
        return {"type": "input_video", "input_video": {"data": v.url, "format": GDC_FORMAT.get(v.ext, v.ext)}}
    return {"type": "video_url", "video_url": {"url": v.url}}
