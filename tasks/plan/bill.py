"""The bill before: each request's estimated cost by modality, its worst case, and what a budget allows."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from tasks.config.prices import Prices
from tasks.config.run import RunConfig
from tasks.errors import ConfigError
from tasks.media.tokens import Estimate
from tasks.plan.items import WorkItem
from tasks.plan.packs import pack_estimate

BILL_PARTS = ("frames", "audio", "timestamps", "text", "output")


def with_output(items: list[WorkItem], tokens: int | None) -> list[WorkItem]:
    """Items whose estimate expects `tokens` of output per request (None: leave them as they are)."""
    if not tokens:
        return items
    return [replace(i, estimate=replace(i.estimate, output=tokens)) if i.estimate is not None else i for i in items]


def part_costs(prices: Prices, est: Estimate) -> dict[str, Decimal | None]:
    """An estimate's cost by part: frames and timestamps at the video price, audio, text, output at theirs."""
    def at(tokens: int, modality: str) -> Decimal | None:
        price = prices.price_of(modality)
        return Decimal(0) if not tokens else None if price is None else Decimal(tokens) * price / Decimal(1_000_000)

    return {"frames": at(est.frames, "video"), "audio": at(est.audio, "audio"),
            "timestamps": at(est.timestamps, "video"), "text": at(est.text, "text"), "output": at(est.output, "output")}


def check_reservations(packs: list[list[WorkItem]], cap: Decimal, reserve) -> None:
    """ConfigError naming the first request whose worst case alone is over the budget (before anything is sent)."""
    for pack in packs:
        est = pack_estimate(pack)
        if pack[0].error is not None or est is None:
            continue
        amount = reserve(est)
        if amount > cap:
            item = pack[0]
            what = item.obj.uri + (f" segment {item.segment_index + 1}/{item.segment_count}"
                                   if item.segment_count > 1 else "") + (f" and {len(pack) - 1} more" if len(pack) > 1
                                                                         else "")
            raise ConfigError(f"budget {cap} is below a single request's reservation: {what} reserves "
                              f"{amount:.6f} (its estimated prompt cost with the margin, plus its output allowance); "
                              "raise the budget or send shorter segments")


def bill_line(item: WorkItem, cfg: RunConfig) -> dict:
    """A dry run's money figures for one planned item (empty without prices)."""
    prices = cfg.provider.prices
    if prices is None or item.estimate is None:
        return {}
    parts = part_costs(prices, item.estimate)
    known = [v for v in parts.values() if v is not None]
    return {"cost_parts": {k: (float(v) if v is not None else None) for k, v in parts.items()},
            "estimated_cost": float(sum(known, Decimal(0))) if len(known) == len(parts) else None,
            "estimated_output_tokens": item.estimate.output}
