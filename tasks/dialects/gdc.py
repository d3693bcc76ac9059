"""The gdc dialect (Gemini on GDC video understanding): model_id, the video before the text, a project/location path."""

from __future__ import annotations

from tasks.dialects.base import Dialect, VideoRef
from tasks.dialects.mime import VIDEO_MIME

# Gemini on GDC video understanding: the nine MIME types as the shared table names them
MIME_TYPES = dict(VIDEO_MIME)


# Gemini on GDC video understanding: input_video's `format` names (3gp is 3gpp)
FORMATS = {"mp4": "mp4", "mov": "mov", "mpeg": "mpeg", "mpg": "mpg", "avi": "avi", "flv": "flv",
           "webm": "webm", "wmv": "wmv", "3gp": "3gpp"}


# Gemini on GDC video understanding: 100 s with audio, 120 s without, 10 videos per request, nine MIME types
MEDIA_LIMITS = {"max_seconds_audio": 100, "max_seconds_silent": 120, "max_videos_per_request": 10,
                "mime_types": ["video/avi", "video/x-flv", "video/mov", "video/mpeg", "video/mpg", "video/mp4",
                               "video/webm", "video/wmv", "video/3gpp"]}


def gdc_part(v: VideoRef) -> dict:
    """GDC part: input_video for inline data, video_url for a bucket object."""
    if v.inline is not None or v.url.startswith("data:"):
        return {"type": "input_video", "input_video": {"data": v.url, "format": FORMATS.get(v.ext, v.ext)}}
    return {"type": "video_url", "video_url": {"url": v.url}}


DIALECT = Dialect("gdc", model_field="model_id", video_part=gdc_part, video_first=True,
                  media_limits=MEDIA_LIMITS, mime_types=MIME_TYPES, formats=FORMATS, localapi_prefix="",
                  path="/v1/projects/{project}/locations/{location}/chat/completions",
                  required=("project", "location"), required_why="they form the endpoint path")
