"""All terminal output: the progress line, dry-run plans and summaries (this module imports no flow)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tasks.record.totals import Totals


class Progress:
    """Prints a run's Totals.line(): redrawn in place on a terminal, every `every_s` seconds otherwise."""

    def __init__(self, stream=None, every_s: float = 10.0, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = 0.2 if self.tty else every_s
        self.enabled = enabled
        self._last = 0.0

    def update(self, totals: Totals, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.every_s):
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + totals.line())
        else:
            self.stream.write(totals.line() + "\n")
        self.stream.flush()

    def close(self, totals: Totals) -> None:
        self.update(totals, force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def print_summary(result: dict, out: TextIO = sys.stdout) -> None:
    """The closing summary of `vidbatch run` and `vidbatch index`."""
    keys = ["ok", "error", "skipped_already_done"] + sorted(k for k in result if k.startswith("skipped_")
                                                              and k != "skipped_already_done")
    keys += ["prompt_tokens", "completion_tokens", "total_tokens", "estimated_prompt_tokens", "wall_time_s"]
    width = max(len(k) for k in keys)
    print("summary:", file=out)
    for k in keys:
        if k in result:
            v = result[k]
            print(f"  {k:<{width}}  {v:,}" if isinstance(v, int) else f"  {k:<{width}}  {v}", file=out)
    print(f"  {'ledger':<{width}}  {result['ledger']}", file=out)
    print_money(result, out)
    if "entries" in result:
        print(f"  entries written  {result['entries']:,} to {result['index']}", file=out)


def print_plan(planned: list[dict], total_tokens: int, what: str, out: TextIO = sys.stdout) -> None:
    """A dry run's plan: one line per request it would send, then the estimated total."""
    print("dry run: nothing is sent; would send", file=out)
    for p in planned:
        if p["error"]:
            print(f"  ERROR  {p['source_uri']}: {p['error']}", file=out)
        else:
            audio = "audio" if p["has_audio"] else "no audio"
            extra = " ".join(x for x in (p["segment"] and f"segment {p['segment']}", p["ops"]) if x)
            print(f"  {p['estimated_prompt_tokens']:>8,} tok  {p['duration_s']:>8.1f} s  {audio:<8}  {p['mime']:<12} "
                  f"{p['source_uri']}{'  (' + extra + ')' if extra else ''}", file=out)
    print(f"total estimated prompt tokens: {total_tokens:,} for {len(planned)} {what}", file=out)


def print_generate_plan(result: dict, out: TextIO = sys.stdout) -> None:
    print(f"dry run: nothing is sent; would submit {result['to_submit']} prompts and poll {result['resumed']} "
          f"tasks ({result['skipped_completed']} already completed, {result['skipped_failed']} failed before)",
          file=out)


def print_generate_summary(result: dict, out: TextIO = sys.stdout) -> None:
    """The closing summary of `vidbatch generate`."""
    keys = ["prompts", "submitted", "resumed", "completed", "failed", "in_progress", "skipped_completed",
            "skipped_failed", "held_by_limit", "output_bytes", "wall_time_s"]
    width = max(len(k) for k in keys + ["generations"])
    print("generate summary:", file=out)
    for k in keys:
        v = result[k]
        print(f"  {k:<{width}}  {v:,}" if isinstance(v, int) else f"  {k:<{width}}  {v}", file=out)
    print(f"  {'generations':<{width}}  {result['table']}", file=out)
    print(f"  {'videos':<{width}}  {result['videos']}", file=out)
    if result["summarize"]:
        s = result["summarize"]
        print(f"  {'summarized':<{width}}  ok {s['ok']}, error {s['error']}, already done "
              f"{s['skipped_already_done']} -> {s['output']}", file=out)


def _amount(value: float | None, currency: str) -> str:
    return "n/a" if value is None else f"{value:,.6f} {currency}"


def print_money(result: dict, out: TextIO = sys.stdout) -> None:
    """The cost lines of a summary: what the run cost, or that the profile has no prices; the budget's figures."""
    currency = result.get("currency")
    if currency is None:
        print(f"  cost: provider {result.get('provider_name')!r} has no prices (provider.prices is null); "
              "the cost columns are null", file=out)
        return
    if "dry_run" not in result and not result.get("planned"):
        print(f"  cost              {_amount(result.get('cost'), currency)} (estimated "
              f"{_amount(result.get('estimated_cost'), currency)})", file=out)
    if result.get("budget") is not None:
        print(f"  budget            {_amount(result['budget'], currency)}: spent "
              f"{_amount(result.get('spent'), currency)}", file=out)
    if result.get("budget_not_sent"):
        print(f"  left undone       {result['budget_not_sent']:,} requests not sent (error_type budget): "
              f"{result.get('budget_stopped')}", file=out)


def print_bill(result: dict, out: TextIO = sys.stdout) -> None:
    """A dry run's bill: the estimated cost of each request and in total, by modality, and what the budget allows."""
    currency = result.get("currency")
    planned = [p for p in result["planned"] if not p["error"]]
    if currency is None:
        print(f"bill: provider {result.get('provider_name')!r} has no prices (provider.prices is null): no bill",
              file=out)
        return
    parts = ("frames", "audio", "timestamps", "text", "output")
    print(f"estimated bill ({currency}; output: {planned[0]['estimated_output_tokens'] if planned else 0:,} tokens "
          "per request expected):", file=out)
    print("  " + "".join(f"{p:>12}" for p in (*parts, "total")) + "  video", file=out)
    totals = dict.fromkeys(parts, 0.0)
    unknown = False
    for p in planned:
        cells = p["cost_parts"]
        for k in parts:
            totals[k] += cells[k] or 0.0
            unknown |= cells[k] is None
        print("  " + "".join(f"{_cell(cells[k]):>12}" for k in parts)
              + f"{_cell(p['estimated_cost']):>12}"
              + f"  {p['source_uri']}" + (f" ({p['segment']})" if p["segment"] else ""), file=out)
    total = sum(totals.values())
    print("  " + "".join(f"{totals[k]:>12.6f}" for k in parts) + f"{total:>12.6f}  total for {len(planned)} "
          f"requests{' (some modality has no price: n/a left out)' if unknown else ''}", file=out)
    left = result.get("budget_left", result.get("budget"))
    if left is None:
        return
    running, fits = 0.0, 0
    for p in planned:
        if running + (p["estimated_cost"] or 0.0) > left:
            break
        running += p["estimated_cost"] or 0.0
        fits += 1
    print(f"budget: {left:,.6f} {currency} left allows {fits} of {len(planned)} requests "
          f"({running:,.6f} of {total:,.6f} {currency} estimated); each request first reserves its worst case "
          "(prompt plus the margin, plus the output allowance), so a run may stop a request or two sooner", file=out)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6f}"
