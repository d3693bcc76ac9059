"""Generation configs (`vidbatch generate`): the Luma generation task API, prompt lists, images, polling."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator

from tasks.config.connection import Connection, StrictModel

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16")


def aspect_ratio_text(value: Any) -> Any:
    """An aspect ratio as text; YAML 1.1 reads an unquoted 16:9 as the base-60 integer 969, so turn it back."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        return f"{value // 60}:{value % 60}"
    return value.strip() if isinstance(value, str) else value


def check_aspect_ratio(value: Any) -> str | None:
    text = aspect_ratio_text(value)
    if text is not None and text not in ASPECT_RATIOS:
        read_as = f" ({text} unquoted reads in YAML as the number {value})" if text != value else ""
        raise ValueError(f"must be one of {', '.join(ASPECT_RATIOS)}{read_as}")
    return text


class GenerationProviderConfig(Connection):
    """The Luma generation task API: a Connection with its own name and a shorter timeout."""

    name: str = "luma"
    timeout_s: float = Field(default=60, gt=0)


class PromptDefaults(StrictModel):
    expand_prompt: bool | None = None
    loop: bool | None = None
    aspect_ratio: str | None = None
    notify_hook: str | None = None

    _ratio = field_validator("aspect_ratio", mode="before")(check_aspect_ratio)


class PromptListConfig(StrictModel):
    url: str = Field(min_length=1)
    format: Literal["csv", "parquet", "yaml"] | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict)
    defaults: PromptDefaults = Field(default_factory=PromptDefaults)


class ImagesConfig(StrictModel):
    delivery: Literal["presigned", "inline"] = "presigned"
    storage_options: dict[str, Any] = Field(default_factory=dict)
    presign_expires_s: PositiveInt = 3600
    max_inline_bytes: PositiveInt = 10 * 2**20


class PollConfig(StrictModel):
    interval_s: float = Field(default=5.0, gt=0)
    backoff: float = Field(default=1.5, ge=1)
    max_interval_s: float = Field(default=60.0, gt=0)
    deadline_s: float = Field(default=3600.0, gt=0)


class GenerateOutputConfig(StrictModel):
    url: str = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=100, ge=1, le=5000)
    flush_seconds: float = Field(default=30.0, gt=0)

    @property
    def videos_url(self) -> str:
        return self.url.rstrip("/") + "/videos"

    @property
    def table_url(self) -> str:
        return self.url.rstrip("/") + "/generations"


class GenerateConfig(StrictModel):
    job: str = Field(default="generations", pattern=r"^[A-Za-z0-9_.-]+$")
    prompts: PromptListConfig
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    provider: GenerationProviderConfig
    poll: PollConfig = Field(default_factory=PollConfig)
    output: GenerateOutputConfig
    summarize: str | None = None
