"""The budget: reservations in arrival order never overshoot; the day's spending is read by the provider's date."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from tasks.call.budget import Spend, reservation
from tasks.config.prices import Prices
from tasks.config.run import OutputConfig
from tasks.media.tokens import Estimate
from tasks.record.cost import estimate_counts
from tasks.record.ledger import write_rows
from tasks.record.spending import spent_on

PRICES = Prices.model_validate({"currency": "XTS", "per_million": {"text": 1, "video": 1, "audio": 2, "output": 4}})


def test_reservation_is_the_prompt_with_its_margin_plus_the_output_allowance():
    est = Estimate(frames=1000, audio=200, timestamps=30, text=10, output=5)
    # prompt 1000 + 30 video + 10 text at 1, 200 audio at 2: 1,440 units; +10 %; plus 100 output at 4
    assert reservation(PRICES, est, 0.1, 100) == Decimal("0.001440") * Decimal("1.1") + Decimal("0.0004")


def test_concurrent_requests_never_spend_more_than_the_budget():
    budget = Decimal("0.05")
    spend = Spend(PRICES, output_tokens=100, margin=0.1, per_run=budget)
    rng = random.Random(7)
    peaks: list[Decimal] = []

    async def request(i: int) -> bool:
        est = Estimate(frames=rng.randint(500, 3000), timestamps=30, text=10)
        hold = await spend.reserve(spend.reservation(est))
        if hold is None:
            return False
        peaks.append(spend.spent + spend.outstanding)
        await asyncio.sleep(rng.uniform(0, 0.01))
        # what the provider reports: up to the estimate, a short answer
        cost = PRICES.cost(billed(est, rng.randint(5, 100)))
        await spend.settle(hold, cost)
        return True

    async def main() -> list[bool]:
        gate = asyncio.Semaphore(8)

        async def limited(i: int) -> bool:
            async with gate:
                return await request(i)
        return await asyncio.gather(*(limited(i) for i in range(60)))

    sent = asyncio.run(main())
    assert 0 < sum(sent) < 60 and spend.refused == 60 - sum(sent)
    assert spend.spent <= budget and max(peaks) <= budget
    assert sent == sorted(sent, reverse=True)  # arrival order: once one does not fit, none after it is sent
    assert "no longer fits the budget" in (spend.stopped or "")


def billed(est: Estimate, output: int):
    """The tokens a request of `est` is billed for, with `output` tokens of answer."""

    return estimate_counts(Estimate(est.frames, est.audio, est.timestamps, est.text, output))


def test_the_day_budget_counts_the_ledger_by_the_date_in_the_profiles_time_zone(tmp_path):
    out = OutputConfig(url=str(tmp_path / "ledger"))
    jakarta = ZoneInfo("Asia/Jakarta")  # UTC+7
    rows = [{"run_id": "r1", "job": "j", "request_key": k, "status": "ok", "provider": "p", "cost": c,
             "created_at": datetime(2026, 12, 2, h, 0, tzinfo=UTC)} for k, h, c in
            (("a", 16, 0.25), ("b", 18, 0.5), ("c", 20, 1.0))]
    rows.append({**rows[0], "request_key": "d", "provider": "other", "cost": 9.0})
    write_rows(rows, out, "r1")
    # 16:00 UTC is 23:00 on 12-02 in Jakarta; 18:00 and 20:00 UTC are already 12-03 there
    assert spent_on(out, "p", datetime(2026, 12, 2).date(), jakarta) == Decimal("0.25")
    assert spent_on(out, "p", datetime(2026, 12, 3).date(), jakarta) == Decimal("1.5")
    assert spent_on(out, "p", datetime(2026, 12, 2).date(), ZoneInfo("UTC")) == Decimal("1.75")

    clock = [datetime(2026, 12, 2, 21, 0, tzinfo=UTC)]  # 04:00 on 12-03 in Jakarta
    spend = Spend(PRICES, 100, per_day=Decimal(2), zone=jakarta, spent_on=lambda d: spent_on(out, "p", d, jakarta),
                  now=lambda: clock[0])
    assert spend.left() == Decimal("0.5")
    clock[0] = datetime(2026, 12, 3, 17, 30, tzinfo=UTC)  # 00:30 on 12-04 in Jakarta: a new day, a full budget
    assert spend.left() == Decimal(2)
    utc = Spend(PRICES, 100, per_day=Decimal(2), zone=ZoneInfo("UTC"),
                spent_on=lambda d: spent_on(out, "p", d, ZoneInfo("UTC")), now=lambda: datetime(2026, 12, 2, 21, 0,
                                                                                                 tzinfo=UTC))
    assert utc.left() == Decimal("0.25")
