"""What a run did, summed over its batches (and over a backfill's shards)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from tasks.errors import RERUN_KINDS

TOTAL_KEYS = ("ok", "error", "skipped_already_done", "prompt_tokens", "completion_tokens", "total_tokens",
              "estimated_prompt_tokens")


def sum_totals(rows: list[dict]) -> dict:
    """The shards' totals added up (TOTAL_KEYS), with the number of shards."""
    out = {k: 0 for k in TOTAL_KEYS}
    for row in rows:
        for k in TOTAL_KEYS:
            out[k] += int(row.get(k) or 0)
    return {"shards": len(rows), **out}


@dataclass
class Totals:
    """What a command did so far: a progress line, the figures of its summary, and its wall time."""

    started: float = field(default_factory=time.monotonic, kw_only=True)

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        raise NotImplementedError

    def as_dict(self) -> dict:
        raise NotImplementedError


@dataclass
class RunTotals(Totals):
    """What a run did, summed over its batches."""

    ok: int = 0
    error: int = 0
    not_attempted: int = 0
    skipped_done: int = 0
    skipped_discover: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated_prompt_tokens: int = 0
    planned: int = 0
    budget: int = 0  # not sent: over the budget (also counted in not_attempted)
    claimed: int = 0  # not sent: another run writing the same output claimed them (tasks/record/claims.py)
    cost: float = 0.0  # the rows' cost, where known
    estimated_cost: float = 0.0

    def add_row(self, row: dict) -> None:
        if row["status"] == "ok":
            self.ok += 1
        else:
            self.error += 1
            self.not_attempted += row.get("error_type") in RERUN_KINDS  # left for the next run: no watermark move
            self.budget += row.get("error_type") == "budget"
        self.cost += row.get("cost") or 0.0
        if row["status"] == "ok" or row.get("cost") is not None:  # the estimate of what was sent, beside its cost
            self.estimated_cost += row.get("estimated_cost") or 0.0
        for k in ("prompt_tokens", "completion_tokens", "total_tokens", "estimated_prompt_tokens"):
            setattr(self, k, getattr(self, k) + int(row.get(k) or 0))

    @property
    def done(self) -> int:
        return self.ok + self.error

    def line(self) -> str:
        rate = self.done / self.wall_s if self.wall_s > 0 else 0.0
        return (f"{self.done}/{self.planned} done (ok {self.ok}, error {self.error}), {self.skipped_done} already "
                f"done, {rate:.1f} items/s, {self.total_tokens:,} tokens, {self.wall_s:.0f} s")

    def as_dict(self) -> dict:
        return {"ok": self.ok, "error": self.error, "skipped_already_done": self.skipped_done,
                **{f"skipped_{k}": v for k, v in sorted(self.skipped_discover.items())},
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens, "estimated_prompt_tokens": self.estimated_prompt_tokens,
                "cost": self.cost, "estimated_cost": self.estimated_cost, "budget_not_sent": self.budget,
                **({"skipped_claimed_elsewhere": self.claimed} if self.claimed else {}),
                "wall_time_s": round(self.wall_s, 2)}


class ProgressView(Protocol):
    """Where a running command shows its Totals (flows.cli.console.Progress prints them on a terminal)."""

    def update(self, totals: Totals, force: bool = False) -> None: ...

    def close(self, totals: Totals) -> None: ...


class NoProgress:
    """Shows nothing: a flow run by a worker or a test reports through Prefect's logs and artifacts alone."""

    def update(self, totals: Totals, force: bool = False) -> None:
        pass

    def close(self, totals: Totals) -> None:
        pass


_current: ProgressView = NoProgress()


def set_progress(progress: ProgressView) -> None:
    """Install the progress view the next runs report to (the CLI installs a terminal line)."""
    global _current
    _current = progress


def current_progress() -> ProgressView:
    return _current
