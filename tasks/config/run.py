"""Run configs: source, provider, prompt, output and media settings, validated by pydantic."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from tasks.config.connection import Connection, StrictModel, as_utc
from tasks.config.layout import parse_layout
from tasks.config.prices import Budget, Prices
from tasks.dialects import registry
from tasks.dialects.base import Dialect
from tasks.errors import ConfigError
from tasks.media.tokens import FRAME_TOKENS

VIDEO_EXTENSIONS = ["mp4", "mpeg", "mpg", "mov", "avi", "flv", "webm", "wmv", "3gp"]


class SourceConfig(StrictModel):
    url: str = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    extensions: list[str] = Field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    since: datetime | None = None
    until: datetime | None = None
    layout: str | None = None           # e.g. "{camera}/{date:%Y/%m/%d}/": a window lists only its directories
    layout_lag_days: int = Field(default=1, ge=0)  # days before a window's start whose directories are listed too

    _tz = field_validator("since", "until")(as_utc)

    @field_validator("layout")
    @classmethod
    def _layout(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_layout(v)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v

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
    max_duration_s: float | None = Field(default=None, gt=0)  # longer videos are refused (LimitError), never cut
    mime_types: list[str] | None = None  # as the dialect names them (video/mov for gdc, video/quicktime for trinity)

    def max_seconds(self, has_audio: bool) -> float | None:
        return self.max_seconds_audio if has_audio else self.max_seconds_silent


class ProviderConfig(Connection):
    """A run's provider: a Connection that speaks a dialect to a model, and how videos reach it."""

    dialect: str
    model: str = Field(min_length=1)
    project: str | None = None
    location: str | None = None
    delivery: Literal["inline", "presigned", "storage_uri", "public_url"] = "inline"
    public_base_url: str | None = None
    presign_expires_s: PositiveInt = 3600
    frame_tokens: PositiveInt = FRAME_TOKENS  # per sampled frame, by the Gemini token rules
    structured_output: Literal["json_schema", "prompt"] = "json_schema"  # how a JSON schema is asked for
    media: MediaLimits = Field(default_factory=MediaLimits)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    prices: Prices | None = None  # per million tokens by modality; null: the provider publishes none (cost is null)
    budget: Budget = Field(default_factory=Budget)

    @field_validator("dialect")
    @classmethod
    def _known_dialect(cls, v: str) -> str:
        registry.dialect(v)
        return v

    @model_validator(mode="before")
    @classmethod
    def _media_defaults(cls, data: Any) -> Any:
        """A profile's media limits start from its dialect's documented ones; keys given override them."""
        if isinstance(data, dict) and isinstance(data.get("dialect"), str) and data["dialect"] in registry.DIALECTS:
            given = data.get("media") or {}
            if isinstance(given, dict):
                data = {**data, "media": {**registry.DIALECTS[data["dialect"]].media_limits, **given}}
        return data

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        self.dialect_record.require(dict(self))
        if self.delivery == "public_url" and not self.public_base_url:
            raise ValueError("delivery public_url needs public_base_url (the URL prefix that serves the source)")
        return self

    @property
    def dialect_record(self) -> Dialect:
        """The Dialect record this provider speaks."""
        return registry.dialect(self.dialect)

    def endpoint(self, base_url: str | None = None) -> str:
        """The chat/completions URL, on `base_url` when given (an embedded localapi's) else the configured one."""
        return self.dialect_record.endpoint(base_url or self.base_url, self.project, self.location)


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
    max_duration_s: float | None = Field(default=None, gt=0)  # refuse longer videos by name (the profile's may too)
    pack: PackConfig = Field(default_factory=PackConfig)
    audio: Literal["keep", "drop"] = "keep"  # drop: send videos without their audio stream (fewer tokens)


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
        b = self.provider.budget
        if b.per_run is not None or b.per_day is not None:
            if problem := budget_problem(self):
                raise ValueError(f"provider.budget: {problem}")
        return self

    def output_allowance(self) -> int | None:
        """Output tokens a request may take at most: provider.budget.output_tokens, else prompt.params.max_tokens."""
        given = self.provider.budget.output_tokens or self.prompt.params.get("max_tokens") \
            or self.prompt.params.get("max_completion_tokens")
        return given if isinstance(given, int) and not isinstance(given, bool) and given > 0 else None

    def scratch(self) -> tuple[str, dict[str, Any]]:
        """Where cut, shrunk or transcoded files go when they must be fetched by URL."""
        if self.media.scratch_url:
            opts = self.media.scratch_storage_options
            return self.media.scratch_url, self.output.storage_options if opts is None else opts
        return self.output.url.rstrip("/") + "/_scratch", self.output.storage_options


def budget_problem(cfg: RunConfig) -> str | None:
    """Why a budget cannot be held for this config (no prices, or no bound on a request's output), or None."""
    p = cfg.provider
    if p.prices is None:
        return (f"provider {p.name!r} has no prices (provider.prices is null), so its spending cannot be counted; "
                "set provider.prices to the provider's published list prices")
    if cfg.output_allowance() is None:
        return ("a request's output must be bounded to reserve its worst case: set prompt.params.max_tokens or "
                "provider.budget.output_tokens")
    return None


def parse_when(value: str | datetime | None, name: str = "--since") -> datetime | None:
    """A date or ISO datetime (UTC unless it says otherwise)."""
    if value is None or isinstance(value, datetime):
        return as_utc(value)
    try:
        return as_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError:
        raise ConfigError(f"{name} {value!r}: not a date; use YYYY-MM-DD or an ISO datetime") from None
