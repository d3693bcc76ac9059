"""What every provider connection shares: base URL, credentials, limits, timeouts and retries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
)

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
    shared: bool = False  # on a Prefect server, rpm/tpm are also held across workers (tasks/quota.py)
