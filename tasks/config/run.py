"""Run configs: source, provider, prompt, output and media settings, validated by pydantic."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

from tasks.config.connection import LOCALAPI, Limits, StrictModel, as_utc
from tasks.errors import ConfigError

VIDEO_EXTENSIONS = ["mp4", "mpeg", "mpg", "mov", "avi", "flv", "webm", "wmv", "3gp"]


class SourceConfig(StrictModel):
    url: str = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    extensions: list[str] = Field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    since: datetime | None = None
    until: datetime | None = None

    _tz = field_validator("since", "until")(as_utc)

    @field_validator("extensions")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [e.lower().lstrip(".") for e in v]


class MediaLimits(StrictModel):
    """What one provider accepts per video and per request (None: no stated limit)."""

    max_seconds_audio: float | None = Field(default=None, gt=0)
    max_seconds_silent: float | None = Field(default=None, gt=0)
    max_bytes_per_video: int | None = Field(default=None, gt=0)
    max_videos_per_request: int = Field(default=1, ge=1)
    max_bytes_per_request: int | None = Field(default=None, gt=0)
    mime_types: list[str] | None = None  # as the dialect names them (video/mov for gdc, video/quicktime for trinity)

    def max_seconds(self, has_audio: bool) -> float | None:
        return self.max_seconds_audio if has_audio else self.max_seconds_silent


# The seeds' numbers: GDC (001/004) 100 s with audio, 120 s without, 10 videos, nine MIME types;
# Trinity (002) 70 MB per file and four MIME types; Lunos (000) four MIME types.
DIALECT_MEDIA_LIMITS: dict[str, dict[str, Any]] = {
    "gdc": {"max_seconds_audio": 100, "max_seconds_silent": 120, "max_videos_per_request": 10,
            "mime_types": ["video/avi", "video/x-flv", "video/mov", "video/mpeg", "video/mpg", "video/mp4",
                           "video/webm", "video/wmv", "video/3gpp"]},
    "trinity": {"max_bytes_per_video": 70 * 1024 * 1024,
                "mime_types": ["video/mp4", "video/mpeg", "video/quicktime", "video/webm"]},
    "openai": {"mime_types": ["video/mp4", "video/mpeg", "video/mov", "video/webm"]},
}


class ProviderConfig(StrictModel):
    name: str = "provider"
    dialect: Literal["openai", "gdc", "trinity"]
    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key_env: str | None = None
    token_command: str | None = None
    token_ttl_s: float = Field(default=3000, gt=0)
    project: str | None = None
    location: str | None = None
    delivery: Literal["inline", "presigned", "storage_uri", "public_url"] = "inline"
    public_base_url: str | None = None
    presign_expires_s: PositiveInt = 3600
    limits: Limits = Field(default_factory=Limits)
    timeout_s: float = Field(default=120, gt=0)
    connect_timeout_s: float = Field(default=10, gt=0)
    max_attempts: PositiveInt = 6
    max_retry_time_s: float = Field(default=600, gt=0)
    backoff_initial_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    retry_budget_ratio: float = Field(default=0.2, ge=0)
    retry_budget_min: int = Field(default=50, ge=0)
    breaker_failures: PositiveInt | None = 20
    breaker_window_s: float = Field(default=60.0, ge=0)
    quota_error_codes: list[str] = Field(default_factory=lambda: ["insufficient_quota"])
    frame_tokens: PositiveInt = 258
    structured_output: Literal["json_schema", "prompt"] = "json_schema"  # how a JSON schema is asked for
    media: MediaLimits = Field(default_factory=MediaLimits)
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _media_defaults(cls, data: Any) -> Any:
        """A profile's media limits start from its dialect's seed numbers; keys given override them."""
        if isinstance(data, dict) and data.get("dialect") in DIALECT_MEDIA_LIMITS:
            given = data.get("media") or {}
            if isinstance(given, dict):
                data = {**data, "media": {**DIALECT_MEDIA_LIMITS[data["dialect"]], **given}}
        return data

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.api_key_env and self.token_command:
            raise ValueError("set either api_key_env or token_command, not both")
        if self.dialect == "gdc" and not (self.project and self.location):
            raise ValueError("the gdc dialect needs project and location (they form the endpoint path)")
        if self.delivery == "public_url" and not self.public_base_url:
            raise ValueError("delivery public_url needs public_base_url (the URL prefix that serves the source)")
        return self

    @property
    def embedded(self) -> bool:
        """True when the run starts its own offline localapi."""
        return self.base_url == LOCALAPI


class PromptConfig(StrictModel):
    system: str = ""
    user: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class OutputConfig(StrictModel):
    url: str = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=200, ge=1, le=5000)
    flush_rows: int = Field(default=100, ge=1)
    flush_seconds: float = Field(default=30.0, gt=0)
    journal: bool = True
    watermark_overlap_s: float = Field(default=300.0, ge=0)


class PackConfig(StrictModel):
    max_videos: int = Field(default=1, ge=1)  # > 1: several videos or segments share one request
    group_by: Literal["directory", "directory_hour", "none"] = "directory_hour"


class MediaConfig(StrictModel):
    segment_target_s: float | None = Field(default=None, gt=0)  # default: the provider's limit less a margin
    segment_overlap_s: float = Field(default=0.0, ge=0)
    cut_mode: Literal["auto", "copy", "reencode"] = "auto"
    shrink: bool = True
    transcode: bool = True
    scratch_url: str | None = None  # cut/shrunk files for URL deliveries; default: <output.url>/_scratch
    scratch_storage_options: dict[str, Any] | None = None  # default: output.storage_options
    inflight_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    pack: PackConfig = Field(default_factory=PackConfig)


class RunConfig(StrictModel):
    job: str = Field(default="summaries", pattern=r"^[A-Za-z0-9_.-]+$")
    source: SourceConfig
    provider: ProviderConfig
    prompt: PromptConfig
    output: OutputConfig
    media: MediaConfig = Field(default_factory=MediaConfig)

    @model_validator(mode="after")
    def _pack_fits(self) -> RunConfig:
        limit = self.provider.media.max_videos_per_request
        if self.media.pack.max_videos > limit:
            raise ValueError(f"media.pack.max_videos {self.media.pack.max_videos} is over provider "
                             f"{self.provider.name!r}'s limit of {limit} videos per request")
        return self

    def scratch(self) -> tuple[str, dict[str, Any]]:
        """Where cut, shrunk or transcoded files go when they must be fetched by URL."""
        if self.media.scratch_url:
            opts = self.media.scratch_storage_options
            return self.media.scratch_url, self.output.storage_options if opts is None else opts
        return self.output.url.rstrip("/") + "/_scratch", self.output.storage_options


def parse_when(value: str | datetime | None, name: str = "--since") -> datetime | None:
    """A date or ISO datetime (UTC unless it says otherwise)."""
    if value is None or isinstance(value, datetime):
        return as_utc(value)
    try:
        return as_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError:
        raise ConfigError(f"{name} {value!r}: not a date; use YYYY-MM-DD or an ISO datetime") from None
