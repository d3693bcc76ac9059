"""Where video bytes come from: data URLs, http(s) URLs and storage-bucket objects."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

FETCH_TIMEOUT_S = 30.0
YOUTUBE_HOSTS = ("youtube.com", "youtu.be", "youtube-nocookie.com")
DEFAULT_PORTS = {"http": 80, "https": 443}


class SourceError(Exception):
    """A video that could not be read; the message never holds its data, a query string or credentials."""


@dataclass(frozen=True)
class DataURL:
    """An RFC 2397 data URL split into its MIME type and its base64 text (decoded on demand)."""

    mime: str
    payload: str

    def decode(self) -> bytes:
        try:
            return base64.b64decode(self.payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SourceError(f"holds invalid base64 ({exc}); send standard base64 without line breaks") from None


def parse_data_url(text: str) -> DataURL:
    """Split `data:<mime>;base64,<data>`; SourceError says what is wrong without echoing the data."""
    if not text.startswith("data:"):
        raise SourceError(
            f"must be a data URL 'data:video/<type>;base64,<data>', got a string of {len(text)} characters "
            "that does not start with 'data:'"
        )
    head, sep, payload = text[5:].partition(",")
    if not sep or len(head) > 200:
        raise SourceError("must be a data URL 'data:video/<type>;base64,<data>' (no ',' after the media type)")
    mime, *params = head.split(";")
    if "base64" not in (p.strip().lower() for p in params):
        raise SourceError("must be base64-encoded: 'data:video/<type>;base64,<data>'")
    return DataURL(mime.strip().lower(), payload)


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: what messages and stats may show of it."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme.lower()}://{parts.hostname or ''}{port}"


def same_origin(url: str, other: str) -> bool:
    """Whether two http(s) URLs share scheme, host and port (default ports filled in)."""

    def key(u: str):
        p = urlsplit(u)
        try:
            port = p.port
        except ValueError:
            return None
        return p.scheme.lower(), (p.hostname or "").lower(), port or DEFAULT_PORTS.get(p.scheme.lower())

    return key(url) is not None and key(url) == key(other)


def is_youtube(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in YOUTUBE_HOSTS)


def fetch_http(url: str) -> bytes:
    """GET a URL (redirects followed, no proxies: localapi is offline)."""
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT_S, follow_redirects=True, trust_env=False) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise SourceError(_reason(exc, url)) from None
    if response.status_code != 200:
        raise SourceError(f"answered HTTP {response.status_code}")
    return response.content


def fetch_s3(uri: str, storage_options: dict) -> bytes:
    """Read `s3://bucket/key` with s3fs (credentials from storage_options or the AWS_* environment)."""
    import s3fs  # botocore is slow to import and only bucket URLs need it

    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        raise SourceError("must name a bucket and an object key: s3://bucket/key")
    try:
        return s3fs.S3FileSystem(**storage_options).cat_file(f"{bucket}/{key}")
    except FileNotFoundError:
        raise SourceError("no such object in the bucket") from None
    except Exception as exc:  # botocore and aiohttp raise many unrelated types
        raise SourceError(_reason(exc, uri)) from None


def _reason(exc: Exception, url: str) -> str:
    """The exception's type and text, or only its type when the text would reveal the URL's path or query."""
    text = str(exc)
    parts = urlsplit(url)
    if url in text or (parts.query and parts.query in text) or not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}"
