"""Backfill shards: a date range and prefixes split by day and prefix, each with a stable idempotency key.

A day shard lists only its day's directories when the source declares a layout. Without one a shard lists
everything below its prefix whatever its window, so the range is split by prefix only: each prefix (or the
whole source) is listed once, not once a day.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from tasks.config.run import SourceConfig, parse_when
from tasks.errors import ConfigError

MAX_SHARDS = 10_000


@dataclass(frozen=True)
class Shard:
    """One child run of summarize: the objects under `prefix` modified on [since, until)."""

    prefix: str = ""
    since: date | None = None
    until: date | None = None

    @property
    def label(self) -> str:
        days = f"{self.since}" if self.since and self.until == self.since + timedelta(days=1) else \
            f"{self.since or '…'}..{self.until or '…'}" if (self.since or self.until) else "all dates"
        return f"{self.prefix or '(root)'} {days}"

    def parameters(self, config: str) -> dict:
        """summarize's parameters for this shard."""
        return {"config": config, "prefix": self.prefix or None,
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None}

    def key(self, config_digest: str) -> str:
        """The shard's idempotency key: the same shard of the same config is one flow run."""
        return f"vidbatch-backfill-{config_digest}-{self.prefix}-{self.since or ''}-{self.until or ''}"


def _day(value: str | date | None, name: str) -> date | None:
    if value is None or isinstance(value, date) and not isinstance(value, datetime):
        return value
    when = parse_when(value, name)
    assert when is not None  # parse_when returns None only for None, handled above
    if when.time() != datetime.min.time():
        raise ConfigError(f"{name} {value!r}: backfill shards are whole days; give a date (YYYY-MM-DD)")
    return when.date()


def plan_shards(since: str | date | None = None, until: str | date | None = None,
                prefixes: list[str] | None = None, by_day: bool = True) -> list[Shard]:
    """One shard per day of [since, until) (or the whole range, without `by_day`) and per prefix; a range without
    prefixes covers the whole source."""
    start, end = _day(since, "since"), _day(until, "until")
    prefixes = [p.strip("/") for p in (prefixes or [])]
    if (start is None) != (end is None):
        raise ConfigError("backfill: give both since and until (until is exclusive), or neither")
    if start is None and not prefixes:
        raise ConfigError("backfill: give a date range (since, until) or a list of prefixes")
    if len(set(prefixes)) != len(prefixes):
        raise ConfigError(f"backfill: prefixes repeat: {prefixes}")
    days: list[tuple[date | None, date | None]] = [(None, None)]
    if start is not None and end is not None:  # both or neither, checked above
        if end <= start:
            raise ConfigError(f"backfill: until {end} must be after since {start}")
        days = [(start + timedelta(days=i), start + timedelta(days=i + 1)) for i in range((end - start).days)] \
            if by_day else [(start, end)]
    shards = [Shard(p, a, b) for p in (prefixes or [""]) for a, b in days]
    if len(shards) > MAX_SHARDS:
        raise ConfigError(f"backfill: {len(shards)} shards is more than {MAX_SHARDS}; split the range")
    return shards


def shards_for(source: SourceConfig, since: str | date | None = None, until: str | date | None = None,
               prefixes: list[str] | None = None) -> list[Shard]:
    """A backfill's shards for this source: by day only where a layout maps a day to its directories."""
    return plan_shards(since, until, prefixes, by_day=source.layout is not None)


def config_digest(path: str | Path) -> str:
    """A short sha256 of the config file's bytes: a changed config makes new shard keys."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
