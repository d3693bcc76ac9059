"""What every provider connection shares: base URL, credentials, limits, timeouts and retries."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

_CONVENTIONAL_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")

LOCALAPI = "localapi"  # base_url that starts the embedded offline provider for the run


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class Limits(StrictModel):
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    concurrency: PositiveInt = 8
    window: Literal["smooth", "sliding"] = "smooth"
    margin_s: float = Field(default=0.25, ge=0, le=30)
    ramp_s: float = Field(default=10.0, ge=0)
    shared: bool = False  # on a Prefect server, rpm/tpm are also held across workers (flows/prefect/shared_limits.py)


class Connection(StrictModel):
    """One HTTP provider: where it is, how to authenticate, how fast to go, how long to wait and how to retry."""

    name: str = "provider"
    base_url: str = Field(min_length=1)
    api_key_env: str | None = None
    token_command: str | None = None
    token_ttl_s: float = Field(default=3000, gt=0)
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

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        if self.api_key_env and self.token_command:
            raise ValueError("set either api_key_env or token_command, not both")
        return self

    @property
    def api_key_env_shown(self) -> str:
        """How a message may name `api_key_env`: the variable's name, unless it looks like a key pasted there."""
        name = self.api_key_env or ""
        return name if _CONVENTIONAL_ENV_NAME.fullmatch(name) else "(named by provider.api_key_env; not shown)"

    @property
    def embedded(self) -> bool:
        """True when the run starts its own offline localapi."""
        return self.base_url == LOCALAPI
