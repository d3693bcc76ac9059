"""What the ledger says about money: spent per day (in a time zone), and the output an answer takes."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pyarrow.compute as pc

from tasks.config.run import OutputConfig
from tasks.record.ledger import ROW_IDENTITY, ledger_dataset
from tasks.record.tables import distinct_rows

RECENT_DAYS = 7  # the partitions whose answers give the expected output of a request


def spent_on(output: OutputConfig, provider: str, day: date, zone: ZoneInfo) -> Decimal:
    """The cost of the provider's rows created on `day` in `zone` (rows of every job and run in this ledger)."""
    data = ledger_dataset(output)
    if data is None:
        return Decimal(0)
    near = [(day + timedelta(days=d)).isoformat() for d in (-1, 0, 1)]  # the UTC partitions `day` in `zone` spans
    table = distinct_rows(data.to_table(columns=["created_at", "provider", "cost", "request_key", "run_id"],
                                        filter=pc.field("date").isin(near) & (pc.field("provider") == provider)
                                        & pc.field("cost").is_valid()), ROW_IDENTITY)
    total = Decimal(0)
    for created, cost in zip(table["created_at"].to_pylist(), table["cost"].to_pylist(), strict=True):
        if created.astimezone(zone).date() == day:
            total += Decimal(str(cost))
    return total


def mean_output_tokens(output: OutputConfig, job: str, model: str) -> int | None:
    """The mean completion_tokens of the job's recent ok answers from this model (a request's expected output)."""
    data = ledger_dataset(output)
    if data is None:
        return None
    dates = sorted({p.split("date=", 1)[1].split("/", 1)[0] for p in data.files if "date=" in p})[-RECENT_DAYS:]
    table = data.to_table(columns=["job", "model", "status", "completion_tokens", "pack_index", "stage"],
                          filter=pc.field("date").isin(dates))  # the recent partitions: not the whole history
    mask = pc.and_(pc.and_(pc.equal(table["job"], job), pc.equal(table["model"], model)),
                   pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["completion_tokens"])))
    tokens = table.filter(pc.and_(mask, pc.is_null(table["stage"])))["completion_tokens"]
    if len(tokens) == 0:
        return None
    return round(pc.mean(tokens).as_py())
