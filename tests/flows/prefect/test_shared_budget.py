"""provider.budget.per_day across workers on Prefect's test server: two runs' requests together stay in the budget."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from flows.prefect.shared_budget import UNITS, DayBudget, limit_name
from tasks.call.budget import Spend
from tasks.config.prices import Prices
from tasks.media.tokens import Estimate
from tests.flows.conftest import prefect_api

pytestmark = pytest.mark.usefixtures("prefect_harness")

PRICES = Prices.model_validate({"currency": "XTS", "per_million": {"text": 1, "video": 1, "output": 4}})


async def test_two_workers_share_one_days_budget():
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    per_day = Decimal("0.02")
    earlier = Decimal("0.005")  # what the ledger says the day spent before
    workers = []
    for _ in range(2):  # each its own Spend and its own DayBudget, as two processes would have
        spend = Spend(PRICES, 50, per_day=per_day, spent_on=lambda d: earlier, now=lambda: now)
        spend.shared = DayBudget("shared-day", per_day, spend.spent_on_day)
        workers.append(spend)
    rng = random.Random(3)

    async def request(spend: Spend) -> None:
        est = Estimate(frames=rng.randint(500, 1500), text=10)
        hold = await spend.reserve(spend.reservation(est))
        if hold is None:
            return
        await asyncio.sleep(rng.uniform(0, 0.02))
        await spend.settle(hold, PRICES.cost(_billed(est)))

    await asyncio.gather(*(request(workers[i % 2]) for i in range(40)))
    spent = sum((w.spent for w in workers), Decimal(0))
    # each worker alone sees the day's earlier spending and its own: together they would pass the budget
    assert all(w.spent > 0 for w in workers) and spent + earlier <= per_day
    assert all(w.refused > 0 for w in workers)
    made = prefect_api("GET", f"/v2/concurrency_limits/{limit_name('shared-day', now.date())}")
    assert made["limit"] == int(per_day * UNITS) and made["slot_decay_per_second"] == 0
    assert made["active_slots"] >= (spent + earlier) * UNITS - 40  # every settled cost counted (rounded up)
    assert made["active_slots"] <= per_day * UNITS


def _billed(est: Estimate):
    from tasks.config.prices import TokenCounts

    return TokenCounts(text=est.text, video=est.frames, output=20)
