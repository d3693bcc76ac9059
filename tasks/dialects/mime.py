"""MIME types and format names of video files, as each dialect names them."""

from __future__ import annotations

# The seeds' MIME names: Gemini/GDC (001, 004) and Lunos (000) say video/mov; Trinity (002) says video/quicktime.
GEMINI_MIME = {"mp4": "video/mp4", "mov": "video/mov", "mpeg": "video/mpeg", "mpg": "video/mpg",
               "avi": "video/avi", "flv": "video/x-flv", "webm": "video/webm", "wmv": "video/wmv",
               "3gp": "video/3gpp"}


GDC_FORMAT = {"mp4": "mp4", "mov": "mov", "mpeg": "mpeg", "mpg": "mpg", "avi": "avi", "flv": "flv",
              "webm": "webm", "wmv": "wmv", "3gp": "3gpp"}


TRINITY_MIME = {**GEMINI_MIME, "mov": "video/quicktime", "mpg": "video/mpeg", "avi": "video/x-msvideo",
                "wmv": "video/x-ms-wmv"}


OPENAI_MIME = {**GEMINI_MIME, "mpg": "video/mpeg"}


def mime_for(dialect: str, ext: str) -> str:
    """The MIME type a dialect expects for a file extension."""
    table = {"trinity": TRINITY_MIME, "openai": OPENAI_MIME}.get(dialect, GEMINI_MIME)
    return table.get(ext.lower(), f"video/{ext.lower() or 'mp4'}")
