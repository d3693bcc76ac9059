"""The three chat/completions dialects: strict validation and the videos a request carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from localapi.config import MODELS, LocalAPIConfig
from localapi.media import MediaError, VideoFacts, analyse, ceil_tokens
from localapi.sources import DataURL, SourceError, fetch_http, fetch_s3, is_youtube, origin, parse_data_url, same_origin

ROLES = ("system", "user", "assistant")
OPENAI_MIMES = ("video/mp4", "video/mpeg", "video/mov", "video/webm")  # Lunos video input
TRINITY_MIMES = ("video/mp4", "video/mpeg", "video/quicktime", "video/webm")  # Trinity video input
GDC_FORMATS = {  # Gemini on GDC video understanding: format -> the data URL's MIME type
    "avi": "video/avi", "flv": "video/x-flv", "mov": "video/mov", "mpeg": "video/mpeg", "mpg": "video/mpg",
    "mp4": "video/mp4", "webm": "video/webm", "wmv": "video/wmv", "3gpp": "video/3gpp",
}
PART_DIALECT = {"video_url": "openai or gdc", "input_video": "gdc", "file": "trinity"}


class ApiError(Exception):
    """An error answer: its HTTP status, OpenAI-style error body and extra headers."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None,
                 type: str = "invalid_request_error", headers: dict | None = None, details: list | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type
        self.headers, self.details = headers or {}, details

    def body(self) -> dict:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        if self.details:
            error["details"] = self.details  # google.rpc-style details, e.g. RetryInfo
        return {"error": error}


def invalid(message: str, param: str | None, code: str) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass
class VideoRef:
    """One video part: where its bytes are and how messages name it (never by its data or query)."""

    part: str  # JSON path of the part
    param: str  # JSON path of the field holding the data URL or URL
    label: str  # file name, URL origin or "inline video/mp4"
    data_url: DataURL | None = None
    url: str | None = None
    summary: dict = field(default_factory=dict)  # the stats view: kind, mime/format, URL origin, file name, size
    index: int = 0  # 1-based order in the request
    position: tuple[int, int] = (0, 0)  # (message, part)


@dataclass
class Parsed:
    """A valid request: its model, its videos in order and the tokens of its text."""

    model: str
    videos: list[VideoRef]
    text_tokens: int


def parse_request(dialect: str, body, cfg: LocalAPIConfig, summary: dict, text_only: bool = False) -> Parsed:
    """Validate a request body; raises ApiError. `summary` collects the stats view as parsing goes.

    `text_only` accepts a request without videos (localapi answers those only when they ask for structured output).
    """
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object", None, "invalid_body")
    key, wrong = ("model_id", "model") if dialect == "gdc" else ("model", "model_id")
    if wrong in body:
        raise invalid(f"the {dialect} dialect names the model in '{key}', not '{wrong}': use {key}", wrong,
                      f"use_{key}")
    model = body.get(key)
    if not isinstance(model, str) or not model.strip():
        raise invalid(f"'{key}' is required: a non-empty string such as 'gemini-2.5-flash'", key, "missing_model")
    summary["model"] = model[:200]
    if model not in MODELS:
        raise ApiError(404, f"model {_show(model)} not found; known models: {', '.join(MODELS)}",
                       param=key, code="model_not_found")
    if body.get("stream"):
        raise invalid("localapi does not stream answers; omit 'stream' or set it to false", "stream",
                      "unsupported_stream")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list of {role, content} objects", "messages", "invalid_messages")
    video_parts = VIDEO_PARTS[dialect]
    allowed = ("text", *video_parts)
    videos: list[VideoRef] = []
    text_tokens = 0
    first_text: dict[int, int] = {}
    parts = summary.setdefault("parts", [])  # {"type": ...} per part, in order; video parts say more
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object with 'role' and 'content'", where, "invalid_message")
        if message.get("role") not in ROLES:
            raise invalid(f"{where}.role must be one of {', '.join(ROLES)}; got {_show(message.get('role'))}",
                          f"{where}.role", "invalid_role")
        content = message.get("content")
        if isinstance(content, str):
            parts.append({"type": "text"})
            text_tokens += ceil_tokens(content)
            continue
        if not isinstance(content, list) or not content:
            raise invalid(f"{where}.content must be a string or a non-empty list of parts", f"{where}.content",
                          "invalid_content")
        for j, part in enumerate(content):
            path = f"{where}.content[{j}]"
            ptype = part.get("type") if isinstance(part, dict) else None
            if not isinstance(ptype, str):
                raise invalid(f"{path} must be an object with a string 'type'", path, "invalid_part")
            entry = {"type": ptype[:40]}
            parts.append(entry)
            if ptype not in allowed:
                hint = (f" ('{ptype}' parts belong to the {PART_DIALECT[ptype]} dialect)" if ptype in PART_DIALECT
                        else "")
                raise invalid(f"part type {_show(ptype)} is not accepted by the {dialect} dialect; allowed types: "
                              f"{', '.join(allowed)}{hint}", f"{path}.type", "unsupported_part_type")
            if ptype == "text":
                if not isinstance(part.get("text"), str):
                    raise invalid(f"{path}.text must be a string", f"{path}.text", "invalid_text")
                text_tokens += ceil_tokens(part["text"])
                first_text.setdefault(i, j)
                continue
            ref = video_parts[ptype](part, path, cfg)
            entry.update(ref.summary)
            ref.summary, ref.index, ref.position = entry, len(videos) + 1, (i, j)
            videos.append(ref)
    if not videos and not text_only:
        raise invalid(f"the request holds no video; add a part of type {' or '.join(video_parts)}", "messages",
                      "no_video")
    if videos and "video" not in MODELS[model]:
        raise invalid(f"model {_show(model)} lacks 'video' in inputModalities ({', '.join(MODELS[model])}); "
                      f"choose a model whose inputModalities include video", key, "model_lacks_video")
    if dialect == "gdc" and videos:
        if len(videos) > cfg.gdc_max_videos:
            raise invalid(f"GDC accepts at most {cfg.gdc_max_videos} videos per request; this request holds "
                          f"{len(videos)}", "messages", "too_many_videos")
        i, j = videos[0].position
        if len(videos) == 1 and first_text.get(i, j) < j:
            raise invalid(f"with a single video GDC needs the video before the text: move {videos[0].part} ahead of "
                          f"messages[{i}].content[{first_text[i]}]", videos[0].part, "video_after_text")
    return Parsed(model, videos, text_tokens)


def analyse_videos(parsed: Parsed, dialect: str, cfg: LocalAPIConfig) -> list[VideoFacts]:
    """Read and decode every video of a valid request, enforcing the dialect's size and duration limits."""
    facts = []
    for ref in parsed.videos:
        data = _load(ref, cfg)
        ref.summary["size"] = len(data)
        if dialect == "trinity" and len(data) > cfg.max_file_bytes:
            raise ApiError(413, f"video {ref.index} ({ref.label}) is {len(data)} bytes; Trinity accepts files up to "
                           f"{cfg.max_file_bytes} bytes ({cfg.max_file_bytes / 2**20:g} MiB)",
                           param=ref.param, code="file_too_large")
        try:
            fact = analyse(data)
        except MediaError as exc:
            raise invalid(f"video {ref.index} ({ref.label}) could not be decoded: {exc}", ref.param,
                          "undecodable_video") from None
        if dialect == "gdc":
            limit = cfg.gdc_max_seconds_audio if fact.has_audio else cfg.gdc_max_seconds_silent
            if fact.duration > limit:
                raise invalid(
                    f"video {ref.index} ({ref.label}) lasts {fact.duration:.2f} s; GDC accepts at most "
                    f"{cfg.gdc_max_seconds_audio:g} s with audio and {cfg.gdc_max_seconds_silent:g} s without "
                    f"(this video {'has' if fact.has_audio else 'has no'} audio): send a shorter segment",
                    ref.param, "video_too_long")
        facts.append(fact)
    return facts


def _load(ref: VideoRef, cfg: LocalAPIConfig) -> bytes:
    if ref.data_url is not None:
        try:
            return ref.data_url.decode()
        except SourceError as exc:
            raise invalid(f"video {ref.index} ({ref.label}): the data URL {exc}", ref.param, "invalid_base64") from None
    url = ref.url
    assert url is not None  # every VideoRef is made with either data_url or url
    try:
        if url.startswith("s3://"):
            options = dict(cfg.storage_options)
            if cfg.storage_endpoint:
                options.setdefault("endpoint_url", cfg.storage_endpoint)
            return fetch_s3(url, options)
        return fetch_http(url)
    except SourceError as exc:
        where = url.split("?")[0] if url.startswith("s3://") else origin(url)
        name = f" ({ref.label})" if ref.label != where else ""
        raise invalid(f"video {ref.index}{name} could not be fetched from {where}: {exc}", ref.param,
                      "unfetchable_url") from None


def _openai_video(part: dict, path: str, cfg: LocalAPIConfig) -> VideoRef:
    url, param = _video_url(part, path)
    if url.startswith("data:"):
        data = _data_url(url, param, OPENAI_MIMES)
        return VideoRef(path, param, f"inline {data.mime}", data_url=data,
                        summary={"kind": "inline", "mime": data.mime})
    _check_http(url, param, "video_url.url must be a data URL 'data:video/<type>;base64,...' or an http(s) URL")
    return _url_ref(path, param, url)


def _gdc_inline(part: dict, path: str, cfg: LocalAPIConfig) -> VideoRef:
    _only_keys(part, ("type", "input_video"), path)
    video = _object(part, "input_video", path)
    _only_keys(video, ("data", "format"), f"{path}.input_video")
    fmt = video.get("format")
    if fmt not in GDC_FORMATS:
        raise invalid(f"{path}.input_video.format must be one of {', '.join(GDC_FORMATS)}; got {_show(fmt)}",
                      f"{path}.input_video.format", "unsupported_format")
    param = f"{path}.input_video.data"
    data = _data_url(_string(video, "data", f"{path}.input_video"), param, (GDC_FORMATS[fmt],),
                     f" (format {fmt!r} needs the data URL to start with 'data:{GDC_FORMATS[fmt]};base64,')")
    return VideoRef(path, param, f"inline {data.mime}", data_url=data,
                    summary={"kind": "inline", "mime": data.mime, "format": fmt})


def _gdc_url(part: dict, path: str, cfg: LocalAPIConfig) -> VideoRef:
    url, param = _video_url(part, path)
    if url.startswith("s3://") or (
        cfg.storage_endpoint and urlsplit(url).scheme in ("http", "https") and same_origin(url, cfg.storage_endpoint)
    ):
        return _url_ref(path, param, url)
    got = "a data URL (send inline video as an input_video part)" if url.startswith("data:") else _where(url)
    endpoint = (f" or a presigned URL on the storage endpoint {origin(cfg.storage_endpoint)}" if cfg.storage_endpoint
                else "")
    raise invalid(f"GDC accepts only objects in a storage bucket: s3://bucket/key{endpoint}; got {got}", param,
                  "not_a_bucket_object")


def _trinity_file(part: dict, path: str, cfg: LocalAPIConfig) -> VideoRef:
    _only_keys(part, ("type", "file_name", "file_url", "extra_content"), path)
    name = part.get("file_name")
    if not isinstance(name, str) or not name.strip():
        raise invalid(f"{path}.file_name must be a non-empty string such as 'clip.mp4'", f"{path}.file_name",
                      "missing_file_name")
    param = f"{path}.file_url"
    url = _string(part, "file_url", path)
    if url.startswith("data:"):
        data = _data_url(url, param, TRINITY_MIMES)
        return VideoRef(path, param, name[:200], data_url=data,
                        summary={"kind": "inline", "mime": data.mime, "file_name": name[:200]})
    _check_http(url, param, "file_url must be an http(s) URL or a data URL 'data:video/<type>;base64,...'")
    ref = _url_ref(path, param, url)
    ref.label = ref.summary["file_name"] = name[:200]
    return ref


VIDEO_PARTS = {
    "openai": {"video_url": _openai_video},
    "gdc": {"input_video": _gdc_inline, "video_url": _gdc_url},
    "trinity": {"file": _trinity_file},
}


def _video_url(part: dict, path: str) -> tuple[str, str]:
    _only_keys(part, ("type", "video_url"), path)
    video = _object(part, "video_url", path)
    _only_keys(video, ("url",), f"{path}.video_url")
    return _string(video, "url", f"{path}.video_url"), f"{path}.video_url.url"


def _url_ref(path: str, param: str, url: str) -> VideoRef:
    label = url.split("?")[0] if url.startswith("s3://") else origin(url)
    return VideoRef(path, param, label, url=url, summary={"kind": "url", "url": origin(url)})


def _check_http(url: str, param: str, message: str) -> None:
    if urlsplit(url).scheme.lower() not in ("http", "https") or not urlsplit(url).hostname:
        raise invalid(f"{message}; got {_where(url)}", param, "invalid_url")
    if is_youtube(url):
        raise invalid(f"localapi cannot fetch YouTube links ({origin(url)}); send the video as a data URL or a "
                      "fetchable http(s) URL", param, "unfetchable_url")


def _data_url(text: str, param: str, mimes: tuple[str, ...], hint: str = "") -> DataURL:
    try:
        data = parse_data_url(text)
    except SourceError as exc:
        raise invalid(f"{param} {exc}", param, "invalid_data_url") from None
    if data.mime not in mimes:
        raise invalid(f"{param}: MIME type {_show(data.mime)} is not accepted; allowed: {', '.join(mimes)}{hint}",
                      param, "unsupported_mime")
    return data


def _object(parent: dict, key: str, path: str) -> dict:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise invalid(f"{path}.{key} must be an object", f"{path}.{key}", "invalid_part")
    return value


def _string(parent: dict, key: str, path: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise invalid(f"{path}.{key} must be a non-empty string", f"{path}.{key}", "invalid_part")
    return value


def _only_keys(obj: dict, keys: tuple[str, ...], path: str) -> None:
    extra = [k for k in obj if k not in keys]
    if extra:
        raise invalid(f"{path} has unexpected key {_show(extra[0])}; allowed keys: {', '.join(keys)}",
                      f"{path}.{str(extra[0])[:40]}", "unexpected_key")


def _where(url: str) -> str:
    """What an error may show of a URL: its origin, or its scheme when it has no host."""
    parts = urlsplit(url)
    if parts.scheme and parts.hostname:
        return origin(url)
    return f"a URL with scheme {_show(parts.scheme[:20])}" if parts.scheme else "a string that is not a URL"


def _show(value) -> str:
    """A short repr of a client value for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
