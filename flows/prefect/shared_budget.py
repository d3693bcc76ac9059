"""provider.budget.per_day across workers: one Prefect global concurrency limit per provider and day, as a counter.

The limit's slots are millionths of the currency, it never decays, and its limit is the day's budget. A request
takes its worst case (an increment the server refuses when it would pass the limit, atomically for every worker)
and gives back what it did not cost. A worker that dies keeps its reservations counted: the day errs on the side
of spending less. The limit is created for a day at the ledger's spending of that day.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import date
from decimal import Decimal

import httpx

from flows.prefect.shared_limits import on_prefect_server
from tasks.call.budget import Spend
from tasks.config.run import ProviderConfig

log = logging.getLogger(__name__)

UNITS = Decimal(1_000_000)  # slots per unit of currency


def limit_name(provider: str, day: date) -> str:
    return f"vidbatch-{provider}-budget-{day.isoformat()}"


class DayBudget:
    """The SharedDay of tasks/call/budget.py on a Prefect server."""

    def __init__(self, provider: str, per_day: Decimal, spent_on: Callable[[date], Decimal]):
        self.provider, self.per_day, self._spent_on = provider, per_day, spent_on
        self._ready: set[date] = set()

    async def _ensure(self, day: date) -> str:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        name = limit_name(self.provider, day)
        if day in self._ready:
            return name
        async with get_client() as client:
            try:
                await client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                spent = math.ceil(self._spent_on(day) * UNITS)
                try:
                    await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
                        name=name, limit=int(self.per_day * UNITS), active_slots=min(spent, int(self.per_day * UNITS)),
                        slot_decay_per_second=0.0))
                except ObjectAlreadyExists:
                    pass  # another worker made it first
        self._ready.add(day)
        return name

    async def take(self, day: date, amount: Decimal) -> bool:
        from prefect.client.orchestration import get_client

        name = await self._ensure(day)
        async with get_client() as client:
            try:
                await client.increment_concurrency_slots([name], math.ceil(amount * UNITS), "concurrency")
            except httpx.HTTPStatusError as e:
                if e.response.status_code == 423:  # locked: it would pass the day's budget
                    return False
                raise
        return True

    async def give_back(self, day: date, amount: Decimal) -> None:
        from prefect.client.orchestration import get_client

        slots = math.floor(amount * UNITS)
        if slots <= 0:
            return
        async with get_client() as client:
            # occupancy_seconds must be > 0; the limit does not decay, so it changes nothing
            await client.release_concurrency_slots([limit_name(self.provider, day)], slots, 0.001)


def share_day_budget(spend: Spend | None, provider: ProviderConfig) -> None:
    """Hold the run's per_day budget on the Prefect server too, when limits.shared asks for it and a server is there."""
    if spend is None or spend.per_day is None or not provider.limits.shared:
        return
    if not on_prefect_server():
        log.warning("provider.limits.shared is set but no Prefect server is configured: the per-day budget is "
                    "counted by this run and the ledger alone")
        return
    spend.shared = DayBudget(provider.name, spend.per_day, spend.spent_on_day)
