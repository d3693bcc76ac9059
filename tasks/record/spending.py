"""What the ledger says about money: spent per day (in a time zone), and the output an answer takes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

import pyarrow.compute as pc

from tasks.config.run import OutputConfig
from tasks.record.ledger import read_rows


def spent_on(output: OutputConfig, provider: str, day: date, zone: ZoneInfo) -> Decimal:
    """The cost of the provider's rows created on `day` in `zone` (rows of every job and run in this ledger)."""
    table = read_rows(output, ["created_at", "provider", "cost"])
    if table is None or table.num_rows == 0:
        return Decimal(0)
    table = table.filter(pc.and_(pc.equal(table["provider"], provider), pc.is_valid(table["cost"])))
    total = Decimal(0)
    for created, cost in zip(table["created_at"].to_pylist(), table["cost"].to_pylist(), strict=True):
        if created.astimezone(zone).date() == day:
            total += Decimal(str(cost))
    return total


def mean_output_tokens(output: OutputConfig, job: str, model: str) -> int | None:
    """The mean completion_tokens of the job's ok answers from this model (a request's expected output), or None."""
    table = read_rows(output, ["job", "model", "status", "completion_tokens", "pack_index", "stage"])
    if table is None:
        return None
    mask = pc.and_(pc.and_(pc.equal(table["job"], job), pc.equal(table["model"], model)),
                   pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["completion_tokens"])))
    tokens = table.filter(pc.and_(mask, pc.is_null(table["stage"])))["completion_tokens"]
    if len(tokens) == 0:
        return None
    return round(pc.mean(tokens).as_py())
