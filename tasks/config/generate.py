"""Generation configs (`vidbatch generate`): the Luma generation task API, prompt lists, images, polling."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

from tasks.config.connection import LOCALAPI, Limits, StrictModel
from tasks.config.run import ProviderConfig

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


class GenerationProviderConfig(StrictModel):
    name: str = "luma"
    base_url: str = Field(min_length=1)
    api_key_env: str | None = None
    token_command: str | None = None
    token_ttl_s: float = Field(default=3000, gt=0)
    limits: Limits = Field(default_factory=Limits)
    timeout_s: float = Field(default=60, gt=0)
    connect_timeout_s: float = Field(default=10, gt=0)
    max_attempts: PositiveInt = 6
    max_retry_time_s: float = Field(default=600, gt=0)
    backoff_initial_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> GenerationProviderConfig:
        if self.api_key_env and self.token_command:
            raise ValueError("set either api_key_env or token_command, not both")
        return self

    @property
    def embedded(self) -> bool:
        """True when the run starts its own offline localapi."""
        return self.base_url == LOCALAPI

    def client_config(self) -> ProviderConfig:
        """These settings as the ProviderConfig that Credentials, Limiter and retry_policy take.

        Its dialect and model are unused: generation calls ProviderClient.request, never send.
        """
        shared = self.model_dump(include={"name", "base_url", "api_key_env", "token_command", "token_ttl_s",
                                          "limits", "timeout_s", "connect_timeout_s", "max_attempts",
                                          "max_retry_time_s", "backoff_initial_s", "backoff_max_s"})
        return ProviderConfig(dialect="openai", model="luma-generations", **shared)


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
