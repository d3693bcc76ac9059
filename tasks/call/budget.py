"""A budget never crossed: each request reserves its worst case before it is sent and settles with what it cost.

Like the tokens-per-minute limiter (pacing.py), the worst case is booked first and corrected by the answer's usage,
so requests in flight together can never spend more than what is left. Reservations are handed out in arrival
order: one that does not fit waits for the requests in flight to settle (their worst case becomes their real
cost), and when it still does not fit with nothing in flight, the budget is spent: nothing more is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from tasks.config.prices import Prices, TokenCounts, money
from tasks.config.run import RunConfig, budget_problem
from tasks.errors import ConfigError
from tasks.media.tokens import Estimate
from tasks.record.cost import answer_cost, estimate_counts
from tasks.record.spending import spent_on


class SharedDay(Protocol):
    """A per-day budget held on a server for every worker (flows/prefect/shared_budget.py): take and give back."""

    async def take(self, day: date, amount: Decimal) -> bool: ...

    async def give_back(self, day: date, amount: Decimal) -> None: ...


@dataclass
class Hold:
    """One request's reservation."""

    amount: Decimal
    day: date


def reservation(prices: Prices, est: Estimate, margin: float, output_tokens: int) -> Decimal:
    """A request's worst case: its estimated prompt cost plus `margin` of it, plus `output_tokens` of output."""
    prompt = prices.cost(estimate_counts(Estimate(est.frames, est.audio, est.timestamps, est.text)))
    out = prices.cost(TokenCounts(output=output_tokens))
    if prompt is None or out is None:
        raise ValueError("a modality the request uses has no price")
    return prompt * (1 + money(margin)) + out


class Spend:
    """What a run may still spend: `per_run`, and `per_day` less what the ledger says was spent that day.

    `spent_on(day)` reads what earlier runs spent on a day (in `zone`); `now` is injectable for tests.
    """

    def __init__(self, prices: Prices, output_tokens: int, margin: float = 0.1, per_run: Decimal | None = None,
                 per_day: Decimal | None = None, zone: ZoneInfo | None = None,
                 spent_on: Callable[[date], Decimal] = lambda day: Decimal(0),
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.prices, self.output_tokens, self.margin = prices, output_tokens, margin
        self.per_run, self.per_day = per_run, per_day
        self.zone = zone or ZoneInfo("UTC")
        self._spent_on, self._now = spent_on, now
        self.spent = Decimal(0)  # by this run, settled
        self.outstanding = Decimal(0)  # reserved by requests in flight
        self.day = self.today()
        self.day_spent = spent_on(self.day) if per_day is not None else Decimal(0)
        self.refused = 0  # requests not sent
        self.stopped: str | None = None  # why nothing more is sent
        self.shared: SharedDay | None = None  # per_day held across workers, when set
        self._turn = asyncio.Lock()
        self._settled = asyncio.Condition()

    def spent_on_day(self, day: date) -> Decimal:
        """What the ledger says was spent on `day` (before this run)."""
        return self._spent_on(day)

    def today(self) -> date:
        return self._now().astimezone(self.zone).date()

    @property
    def cap(self) -> Decimal | None:
        """The most a single run could ever spend: the smaller of per_run and per_day."""
        caps = [c for c in (self.per_run, self.per_day) if c is not None]
        return min(caps) if caps else None

    def reservation(self, est: Estimate) -> Decimal:
        return reservation(self.prices, est, self.margin, self.output_tokens)

    def left(self) -> Decimal | None:
        """What may still be reserved now (None: no limit)."""
        lefts = []
        if self.per_run is not None:
            lefts.append(self.per_run - self.spent - self.outstanding)
        if self.per_day is not None:
            day = self.today()
            if day != self.day:  # a new day in the provider's time zone: its budget starts afresh
                self.day, self.day_spent = day, self._spent_on(day)
            lefts.append(self.per_day - self.day_spent - self.outstanding)
        return min(lefts) if lefts else None

    def _why(self, amount: Decimal) -> str:
        parts = []
        if self.per_run is not None:
            parts.append(f"this run spent {self.spent:.6f} of its budget {money(self.per_run)}")
        if self.per_day is not None:
            parts.append(f"{self.day} ({self.zone.key}) spent {self.day_spent:.6f} of the day's budget "
                         f"{money(self.per_day)}")
        return (f"not sent: its worst case {amount:.6f} {self.prices.currency} no longer fits the budget ("
                f"{'; '.join(parts)}); the next run sends it")

    async def reserve(self, amount: Decimal) -> Hold | None:
        """Book `amount`, waiting for requests in flight to settle while it does not fit; None: it never will."""
        async with self._turn:
            while not self.stopped:
                left = self.left()
                if (left is None or amount <= left) and (
                        self.shared is None or await self.shared.take(self.day, amount)):
                    self.outstanding += amount
                    return Hold(amount, self.day)
                if self.outstanding <= 0:
                    self.stopped = self._why(amount)
                    break
                async with self._settled:
                    await self._settled.wait()
        self.refused += 1
        return None

    async def settle(self, hold: Hold, cost: Decimal | None) -> None:
        """A request is done: its reservation becomes what it cost (`cost` None: assume the worst case)."""
        actual = hold.amount if cost is None else cost
        if self.shared is not None and actual < hold.amount:
            await self.shared.give_back(hold.day, hold.amount - actual)
        elif self.shared is not None and actual > hold.amount:  # it cost more than its worst case: count it all
            await self.shared.take(hold.day, actual - hold.amount)
        self.outstanding -= hold.amount
        self.spent += actual
        if hold.day == self.day:
            self.day_spent += actual
        async with self._settled:
            self._settled.notify_all()

    def cost_of(self, prompt_tokens: int | None, completion_tokens: int | None, usage: dict | None,
                est: Estimate | None) -> Decimal | None:
        return answer_cost(prompt_tokens, completion_tokens, usage, self.prices, est)

    def summary(self) -> dict:
        return {"budget": float(self.cap) if self.cap is not None else None, "spent": float(self.spent),
                "currency": self.prices.currency, "not_sent_budget": self.refused, "budget_stopped": self.stopped}


def open_spend(cfg: RunConfig, per_run: float | None = None,
               now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Spend | None:
    """The run's budget: `per_run` (--budget) or provider.budget.per_run, and provider.budget.per_day; None: none."""
    b = cfg.provider.budget
    run_cap = per_run if per_run is not None else b.per_run
    if run_cap is None and b.per_day is None:
        return None
    if run_cap is not None and (isinstance(run_cap, bool) or run_cap <= 0):
        raise ConfigError(f"--budget {run_cap!r}: must be an amount above 0")
    if problem := budget_problem(cfg):
        raise ConfigError(f"--budget: {problem}")
    prices, allowance = cfg.provider.prices, cfg.output_allowance()
    assert prices is not None and allowance is not None  # budget_problem said both are there
    return Spend(prices, allowance, b.margin, money(run_cap) if run_cap is not None else None,
                 money(b.per_day) if b.per_day is not None else None, b.zone,
                 lambda day: spent_on(cfg.output, cfg.provider.name, day, b.zone), now)


def money_summary(cfg: RunConfig, spend: Spend | None, dry_run: bool = False) -> dict:
    """The run result's money keys: currency (None: no prices), the budget, what is left of it before a dry run."""
    prices = cfg.provider.prices
    out: dict = {"currency": prices.currency if prices else None, "provider_name": cfg.provider.name}
    if spend is not None:
        out.update(spend.summary())
        if dry_run:
            left = spend.left()
            out["budget_left"] = float(left) if left is not None else None
    return out
