"""Prompt lists for video generation: read from CSV, Parquet or YAML and validated whole before anything is sent."""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import math
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import fsspec
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import ErrorDetails

from tasks.config.generate import GenerateConfig, ImagesConfig, PromptListConfig, check_aspect_ratio
from tasks.errors import ConfigError, SourceError
from tasks.prepare.delivery import OBJECT_STORE_PROTOCOLS

PROMPT_FIELDS = ("user_prompt", "expand_prompt", "image_url", "image_end_url", "loop", "aspect_ratio", "notify_hook")


IMAGE_FIELDS = ("image_url", "image_end_url")


IMAGE_MIME = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}


FORMATS = {"csv": "csv", "parquet": "parquet", "pq": "parquet", "yaml": "yaml", "yml": "yaml"}


MAX_ERRORS_SHOWN = 20


def strip_query(url: str) -> str:
    """A URL without its query and fragment: what tables and logs may keep of it (no signatures, no tokens)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@dataclass(frozen=True)
class ImageRef:
    """An image a prompt names: an http(s) URL, a data URL, or a storage object (sent presigned or inline)."""

    kind: Literal["url", "data", "object"]
    value: str  # the URL, the data URL, or the object's URI

    @property
    def recorded(self) -> str:
        """What the table and logs show: the URL without its query, an object's URI, never base64."""
        if self.kind == "data":
            head = self.value.split(",", 1)[0]
            digest = hashlib.sha256(self.value.encode()).hexdigest()[:16]
            return f"{head},<{len(self.value) - len(head) - 1} characters, sha256 {digest}>"
        return strip_query(self.value) if self.kind == "url" else self.value


@dataclass(frozen=True)
class Prompt:
    """One validated row of a prompt list, with its deterministic key."""

    key: str
    source: str
    row: int
    user_prompt: str
    expand_prompt: bool | None = None
    image_url: ImageRef | None = None
    image_end_url: ImageRef | None = None
    loop: bool | None = None
    aspect_ratio: str | None = None
    notify_hook: str | None = None

    def recorded_fields(self) -> dict:
        """The request fields as the table keeps them (images and hook without queries or base64)."""
        return {"user_prompt": self.user_prompt, "expand_prompt": self.expand_prompt,
                "image_url": self.image_url.recorded if self.image_url else None,
                "image_end_url": self.image_end_url.recorded if self.image_end_url else None,
                "loop": self.loop, "aspect_ratio": self.aspect_ratio,
                "notify_hook": strip_query(self.notify_hook) if self.notify_hook else None}


class PromptRow(BaseModel):
    """The fields of one prompt as the Luma generation task API names them."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    user_prompt: str
    expand_prompt: bool | None = None
    image_url: str | None = None
    image_end_url: str | None = None
    loop: bool | None = None
    aspect_ratio: str | None = None
    notify_hook: str | None = None

    _ratio = field_validator("aspect_ratio", mode="before")(check_aspect_ratio)

    @field_validator("user_prompt")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v:
            raise ValueError("must be a non-empty text")
        return v

    @field_validator("notify_hook")
    @classmethod
    def _hook(cls, v: str | None) -> str | None:
        if v is not None and (urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).hostname):
            raise ValueError("must be an http(s) URL")
        return v


def list_format(cfg: PromptListConfig) -> str:
    """csv, parquet or yaml: the configured format, else the file's extension."""
    if cfg.format:
        return cfg.format
    ext = cfg.url.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
    if ext not in FORMATS:
        raise ConfigError(f"prompts.url {cfg.url}: cannot tell the format from the extension .{ext}; name the file "
                          ".csv, .parquet or .yaml, or set prompts.format")
    return FORMATS[ext]


def _blank(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def read_rows(cfg: PromptListConfig) -> tuple[str, list[tuple[str, dict]]]:
    """The prompt list's URI and its rows as (label such as "row 3 (line 4)", raw fields)."""
    fmt = list_format(cfg)
    try:
        fs, path = fsspec.core.url_to_fs(cfg.url, **cfg.storage_options)
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise ConfigError(f"prompts.url {cfg.url}: no such file") from None
    except OSError as e:
        raise SourceError(f"prompts.url {cfg.url}: could not be read: {type(e).__name__}: {e}") from None
    uri = fs.unstrip_protocol(path)
    try:
        rows = list(_parse(fmt, data))
    except (ValueError, UnicodeDecodeError, csv.Error, yaml.YAMLError, OSError) as e:
        raise ConfigError(f"{uri}: not a readable {fmt} prompt list: {e}") from None
    if not rows:
        raise ConfigError(f"{uri}: the prompt list holds no prompts")
    return uri, rows


def _parse(fmt: str, data: bytes) -> Iterator[tuple[str, dict]]:
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        for n, record in enumerate(reader, 1):
            if None in record:
                raise ValueError(f"row {n} (line {reader.line_num}) has more cells than the header has columns")
            yield f"row {n} (line {reader.line_num})", {k.strip(): _blank(v) for k, v in record.items()}
    elif fmt == "parquet":
        for n, record in enumerate(pq.read_table(io.BytesIO(data)).to_pylist(), 1):
            yield f"row {n}", {k: _blank(v) for k, v in record.items()}
    else:
        doc = yaml.safe_load(data.decode("utf-8-sig"))
        if isinstance(doc, dict) and set(doc) == {"prompts"}:
            doc = doc["prompts"]
        if not isinstance(doc, list):
            raise ValueError("the top level must be a list of prompts (or a mapping with the one key `prompts`)")
        for n, item in enumerate(doc, 1):
            if isinstance(item, str):
                item = {"user_prompt": item}
            if not isinstance(item, dict):
                raise ValueError(f"row {n}: each prompt is a mapping of fields or a text, not {type(item).__name__}")
            yield f"row {n}", {str(k): _blank(v) for k, v in item.items()}


def image_ref(value: str, list_uri: str) -> ImageRef:
    """Classify an image value; a relative path is an object beside the prompt list. ValueError says what is wrong."""
    scheme = urlsplit(value).scheme.lower() if "://" in value or value.startswith("data:") else ""
    if scheme in ("http", "https"):
        if not urlsplit(value).hostname:
            raise ValueError("an http(s) URL needs a host")
        return ImageRef("url", value)
    if scheme == "data":
        head, sep, payload = value[5:].partition(",")
        mime, *params = head.split(";")
        if not sep or not mime.lower().startswith("image/") or "base64" not in [p.lower() for p in params]:
            raise ValueError("a data URL must read data:image/<type>;base64,<data>")
        try:
            if not base64.b64decode(payload, validate=True):
                raise ValueError("the data URL holds no data")
        except binascii.Error:
            raise ValueError("the data URL holds invalid base64") from None
        return ImageRef("data", value)
    if scheme or value.startswith("/"):
        return ImageRef("object", value)
    base_scheme, _, base = list_uri.rpartition("://")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(base), value))
    return ImageRef("object", f"{base_scheme}://{joined}" if base_scheme else joined)


class ImageSender:
    """Turns image references into what the provider receives: the URL as given, a presigned URL or a data URL."""

    def __init__(self, cfg: ImagesConfig, fallback_options: dict | None = None):
        self.cfg = cfg
        self.options = cfg.storage_options or dict(fallback_options or {})

    def locate(self, uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
        local = "://" not in uri or uri.startswith("file://")
        return fsspec.core.url_to_fs(uri, **({} if local else self.options))

    def check(self, ref: ImageRef) -> None:
        """Refuse, before any call, an object that is missing, not an image, or cannot be delivered as configured."""
        if ref.kind != "object":
            return
        ext = ref.value.rsplit(".", 1)[-1].lower()
        if ext not in IMAGE_MIME:
            raise ValueError(f"{ref.value}: not an image file name (allowed: {', '.join(sorted(IMAGE_MIME))})")
        fs, path = self.locate(ref.value)
        protocols = set(fs.protocol if isinstance(fs.protocol, (tuple, list)) else [fs.protocol])
        if self.cfg.delivery == "presigned" and not protocols & OBJECT_STORE_PROTOCOLS:
            raise ValueError(f"{ref.value}: images.delivery presigned needs an object store (s3://, gs://); "
                             "send local files with images.delivery: inline")
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise ValueError(f"{ref.value}: no such object") from None
        except OSError as e:
            raise ValueError(f"{ref.value}: could not be read: {type(e).__name__}") from None
        if self.cfg.delivery == "inline" and (info.get("size") or 0) > self.cfg.max_inline_bytes:
            raise ValueError(f"{ref.value}: {info.get('size')} bytes, more than images.max_inline_bytes "
                             f"({self.cfg.max_inline_bytes}); send it presigned")

    def url(self, ref: ImageRef) -> str:
        """The value to send for one image (blocking: it may sign or read the object)."""
        if ref.kind != "object":
            return ref.value
        fs, path = self.locate(ref.value)
        try:
            if self.cfg.delivery == "presigned":
                return fs.sign(path, expiration=self.cfg.presign_expires_s)
            data = fs.cat_file(path)
        except FileNotFoundError:
            raise SourceError(f"{ref.value}: vanished after validation") from None
        except OSError as e:
            raise SourceError(f"{ref.value}: could not be read: {type(e).__name__}") from None
        mime = IMAGE_MIME[ref.value.rsplit(".", 1)[-1].lower()]
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

    def body(self, p: Prompt) -> dict:
        """The JSON body of POST /luma/generations for a prompt: only the fields it sets."""
        body: dict[str, Any] = {"user_prompt": p.user_prompt}
        for name in ("expand_prompt", "image_url", "image_end_url", "loop", "aspect_ratio", "notify_hook"):
            value = getattr(p, name)
            if value is not None:
                body[name] = self.url(value) if isinstance(value, ImageRef) else value
        return body


def prompt_key(fields: dict, provider: str, take: int) -> str:
    """sha256 of what decides the clip: the provider, the request fields and which copy of an identical row it is."""
    blob = json.dumps({"provider": provider, "fields": fields, "take": take}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _message(err: ErrorDetails) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "(row)"
    if err["type"] == "extra_forbidden":
        return f"{field}: unknown field; allowed fields: {', '.join(PROMPT_FIELDS)}"
    if err["type"] == "missing":
        return f"{field}: required field is missing"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {str(got)[:60]!r})"
    return f"{field}: {err['msg'].removeprefix('Value error, ')}{shown}"


def load_prompts(cfg: GenerateConfig, images: ImageSender | None = None) -> list[Prompt]:
    """Read and validate the whole prompt list; one ConfigError names every bad file, row and field."""
    uri, rows = read_rows(cfg.prompts)
    images = images or ImageSender(cfg.images, cfg.prompts.storage_options)
    defaults = cfg.prompts.defaults.model_dump(exclude_none=True)
    problems: list[str] = []
    prompts: list[Prompt] = []
    takes: dict[str, int] = {}  # a row's fields as JSON -> its latest take (0: the first of identical rows)
    for n, (label, raw) in enumerate(rows, 1):
        try:
            row = PromptRow.model_validate({**defaults, **{k: v for k, v in raw.items() if v is not None}})
        except ValidationError as e:
            problems += [f"{uri}: {label}: {_message(err)}" for err in e.errors()]
            continue
        refs = {}
        for name in IMAGE_FIELDS:
            value = getattr(row, name)
            if value is None:
                continue
            try:
                refs[name] = ref = image_ref(value, uri)
                images.check(ref)
            except ValueError as e:
                problems.append(f"{uri}: {label}: {name}: {e}")
        fields = {**row.model_dump(), **{name: ref.value for name, ref in refs.items()}}
        identity = json.dumps(fields, sort_keys=True)
        takes[identity] = takes.get(identity, -1) + 1
        prompts.append(Prompt(key=prompt_key(fields, cfg.provider.name, takes[identity]), source=uri, row=n,
                              **{**row.model_dump(), **refs}))
    if problems:
        shown = problems[:MAX_ERRORS_SHOWN]
        more = f"\n  … and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise ConfigError(f"invalid prompt list ({len(problems)} problem{'s' * (len(problems) > 1)}; nothing was "
                          "sent):\n  " + "\n  ".join(shown) + more)
    return prompts
