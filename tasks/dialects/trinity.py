"""The trinity dialect (Trinity video input): `file` parts with file_name and file_url, after the text."""

from __future__ import annotations

from tasks.dialects.base import Dialect, VideoRef
from tasks.dialects.mime import VIDEO_MIME

# Trinity video input: .mov is video/quicktime, and the registered names for .mpg, .avi and .wmv
MIME_TYPES = {**VIDEO_MIME, "mov": "video/quicktime", "mpg": "video/mpeg", "avi": "video/x-msvideo",
              "wmv": "video/x-ms-wmv"}


# Trinity video input: 70 MB per file and four MIME types
MEDIA_LIMITS = {"max_bytes_per_video": 70 * 1024 * 1024,
                "mime_types": ["video/mp4", "video/mpeg", "video/quicktime", "video/webm"]}


def trinity_part(v: VideoRef) -> dict:
    """Trinity file part: {"type": "file", "file_name": ..., "file_url": ...}."""
    return {"type": "file", "file_name": v.file_name, "file_url": v.url}


DIALECT = Dialect("trinity", model_field="model", video_part=trinity_part, video_first=False,
                  media_limits=MEDIA_LIMITS, mime_types=MIME_TYPES, localapi_prefix="/trinity/v1")
