"""Prices per million tokens by modality, and the budget a run may spend: validated config, exact arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PositiveInt, StrictFloat, StrictInt, field_validator

from tasks.config.connection import StrictModel

PER = Decimal(1_000_000)  # prices are per million tokens

# a price: a plain number >= 0 (a quoted "0.30", a boolean or a negative number is a config error at its key)
Price = Annotated[StrictFloat | StrictInt, Field(ge=0)]

MODALITIES = ("text", "video", "audio", "cached", "output")


def money(value: float | int | Decimal) -> Decimal:
    """A configured amount as the Decimal its YAML text wrote (0.3, not 0.29999999999999998889...)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


class PerMillion(StrictModel):
    """Price per million tokens of each modality; null: the provider publishes none (that cost stays null)."""

    text: Price | None = None     # input text
    video: Price | None = None    # input video: sampled frames and their timestamps
    audio: Price | None = None    # input audio
    cached: Price | None = None   # cached input, of any modality
    output: Price | None = None   # output, reasoning tokens included (they are part of completion_tokens)


class Prices(StrictModel):
    """A model's list prices, with where and when they were read."""

    currency: str = Field(min_length=1, max_length=8)  # ISO 4217 (XTS: the code reserved for tests and examples)
    per_million: PerMillion
    as_of: date | None = None  # the date the numbers were read
    source: str | None = None  # the page they come from

    def cost(self, counts: TokenCounts) -> Decimal | None:
        """The exact cost of `counts`, or None when a modality it uses has no price."""
        total = Decimal(0)
        for name in MODALITIES:
            tokens = getattr(counts, name)
            if not tokens:
                continue
            price = getattr(self.per_million, name)
            if price is None:
                return None
            total += Decimal(tokens) * money(price) / PER
        return total

    def price_of(self, name: str) -> Decimal | None:
        price = getattr(self.per_million, name)
        return None if price is None else money(price)


Amount = Annotated[StrictFloat | StrictInt, Field(gt=0)]


class Budget(StrictModel):
    """What a run, and all runs of one day, may spend with this provider (in its prices' currency)."""

    per_run: Amount | None = None
    per_day: Amount | None = None
    time_zone: str = "UTC"  # the day of per_day: the provider's billing day (an IANA name, e.g. Asia/Jakarta)
    margin: float = Field(default=0.1, ge=0, le=1)  # added to the prompt estimate when a request is reserved
    output_tokens: PositiveInt | None = None  # output allowance per request; default prompt.params.max_tokens

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as UTC or Asia/Jakarta") from None
        return v

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


@dataclass(frozen=True)
class TokenCounts:
    """Tokens by what they are billed as."""

    text: int = 0
    video: int = 0
    audio: int = 0
    cached: int = 0
    output: int = 0

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(*(getattr(self, n) + getattr(other, n) for n in MODALITIES))
