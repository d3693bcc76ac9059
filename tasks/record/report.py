"""A self-contained HTML page of a summarize ledger: per day and job the requests, errors, tokens, cost and latency."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import fsspec
import pandas as pd
import pyarrow as pa

from tasks.config.run import OutputConfig
from tasks.errors import ConfigError
from tasks.record.ledger import ROW_IDENTITY, SCHEMA
from tasks.record.tables import distinct_rows, partitions, put_atomic, read_partitions

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2430;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 6px}.muted{color:#667085}
table{border-collapse:collapse;margin:8px 0;background:#fff}td,th{padding:3px 10px;border-bottom:1px solid #e4e7ec;
text-align:right}th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
.plot{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px;display:inline-block;margin:0 12px 12px 0}
"""

DEFAULT_NAME = "_report.html"  # inside the ledger folder; the leading _ keeps Parquet readers off it

ERROR_COLOURS = ["#d92d20", "#f79009", "#7a5af8", "#0ba5ec", "#667085", "#e31b54", "#15b79e"]


def _number(v, digits: int = 0) -> str:
    if v is None or pd.isna(v):
        return "–"
    return f"{v:,.{digits}f}"


def day_job_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per date and job: requests, ok, errors by type, tokens by modality, cost, estimate and latency percentiles."""
    df = df.assign(date=df["created_at"].dt.strftime("%Y-%m-%d"))
    rows = []
    for (date, job), g in df.groupby(["date", "job"], sort=True):
        lat = g["latency_ms"].dropna().astype(float)
        errors = g[g.status != "ok"]["error_type"].value_counts()
        rows.append({
            "date": date, "job": job, "requests": len(g), "ok": int((g.status == "ok").sum()),
            "errors": ", ".join(f"{k} {v}" for k, v in errors.items()) or "none",
            "video_tokens": g["prompt_video_tokens"].sum(min_count=1),
            "audio_tokens": g["prompt_audio_tokens"].sum(min_count=1),
            "text_tokens": g["prompt_text_tokens"].sum(min_count=1),
            "output_tokens": g["completion_tokens"].sum(min_count=1),
            "estimated_prompt_tokens": g.loc[g.status == "ok", "estimated_prompt_tokens"].sum(min_count=1),
            "prompt_tokens": g["prompt_tokens"].sum(min_count=1),
            "estimated_cost": g.loc[g.status == "ok", "estimated_cost"].sum(min_count=1),
            "cost": g["cost"].sum(min_count=1),
            "currency": ", ".join(sorted(set(g["currency"].dropna()))),
            "p50_ms": lat.quantile(0.5) if len(lat) else None, "p90_ms": lat.quantile(0.9) if len(lat) else None,
            "p99_ms": lat.quantile(0.99) if len(lat) else None,
        })
    return pd.DataFrame(rows)


def _bars(title: str, series: dict[str, dict[str, float]], unit: str = "") -> str:
    """An SVG bar chart: one bar per day, stacked by the series' keys (one colour each)."""
    days = sorted({d for s in series.values() for d in s})
    totals = {d: sum(s.get(d, 0) for s in series.values()) for d in days}
    top = max(totals.values(), default=0) or 1
    width, height, bar = max(240, 60 * len(days) + 40), 180, 36
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img" '
             f'aria-label="{html.escape(title)}">']
    for i, d in enumerate(days):
        x, y = 30 + i * 60, float(height)
        for k, (name, s) in enumerate(series.items()):
            h = s.get(d, 0) / top * (height - 20)
            if h > 0:
                y -= h
                parts.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}" '
                             f'fill="{ERROR_COLOURS[k % len(ERROR_COLOURS)] if len(series) > 1 else "#2e90fa"}">'
                             f'<title>{html.escape(name)} {d}: {s.get(d, 0):g}{unit}</title></rect>')
        parts.append(f'<text x="{x + bar / 2}" y="{height + 14}" font-size="10" text-anchor="middle">{d[5:]}</text>')
        parts.append(f'<text x="{x + bar / 2}" y="{y - 3:.1f}" font-size="10" text-anchor="middle">'
                     f'{totals[d]:g}</text>')
    legend = "".join(f'<tspan fill="{ERROR_COLOURS[k % len(ERROR_COLOURS)]}">■ {html.escape(n)} </tspan>'
                     for k, n in enumerate(series)) if len(series) > 1 else ""
    parts.append(f'<text x="4" y="{height + 32}" font-size="11">{html.escape(title)} {legend}</text></svg>')
    return f'<div class="plot">{"".join(parts)}</div>'


@dataclass
class Figures:
    """What the page shows, summed a day at a time: the per day and job rows, cost and errors per day, the rows."""

    days: list[pd.DataFrame] = field(default_factory=list)
    cost: dict[str, float] = field(default_factory=dict)
    errors: dict[str, dict[str, float]] = field(default_factory=dict)  # error_type -> date -> rows
    rows: int = 0

    def add(self, df: pd.DataFrame) -> None:
        """Rows of one or more whole days (a day's figures need all its rows: its latency percentiles)."""
        if df.empty:
            return
        self.days.append(day_job_table(df))
        days = df.assign(date=df["created_at"].dt.strftime("%Y-%m-%d"))
        self.cost.update(days.groupby("date")["cost"].sum().to_dict())
        errs = days[days.status != "ok"].groupby(["error_type", "date"]).size()
        for t in errs.index.get_level_values(0).unique():
            self.errors.setdefault(str(t), {}).update(errs[t].to_dict())
        self.rows += len(df)


REPORT_COLUMNS = list(dict.fromkeys(["created_at", "job", "status", "error_type", "latency_ms", "prompt_video_tokens",
                                     "prompt_audio_tokens", "prompt_text_tokens", "completion_tokens",
                                     "estimated_prompt_tokens", "prompt_tokens", "estimated_cost", "cost", "currency",
                                     *ROW_IDENTITY]))


def ledger_figures(output: OutputConfig) -> Figures:
    """The page's figures, read a date partition at a time and only the columns they need: memory holds one
    day's rows, whatever the ledger's size (a row's partition is its created_at's UTC date, the page's day)."""
    figures = Figures()
    nullable = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(), pa.bool_(): pd.BooleanDtype()}
    for day in partitions(output):
        table = read_partitions(output, SCHEMA, [day], None, REPORT_COLUMNS)
        if table is not None:  # identical copies (an object-store compaction's old and new files) count once
            figures.add(distinct_rows(table, ROW_IDENTITY).to_pandas(types_mapper=nullable.get))
    return figures


def render(figures: Figures, title: str) -> str:
    table = pd.concat(figures.days, ignore_index=True) if figures.days else day_job_table(pd.DataFrame())
    cost = {"cost": figures.cost}
    errors = {t: figures.errors[t] for t in sorted(figures.errors)} or {"errors": {}}
    heads = ["date", "job", "requests", "ok", "errors", "video tok", "audio tok", "text tok", "output tok",
             "est. prompt tok", "prompt tok", "est. cost", "cost", "currency", "p50 ms", "p90 ms", "p99 ms"]
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            r.date, r.job, r.requests, r.ok, r.errors, _number(r.video_tokens), _number(r.audio_tokens),
            _number(r.text_tokens), _number(r.output_tokens), _number(r.estimated_prompt_tokens),
            _number(r.prompt_tokens), _number(r.estimated_cost, 6), _number(r.cost, 6), r.currency or "–",
            _number(r.p50_ms), _number(r.p90_ms), _number(r.p99_ms))) + "</tr>" for r in table.itertuples())
    return (f"<!doctype html><html><head><meta charset=utf-8><title>vidbatch ledger: {html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>vidbatch ledger</h1><p class=muted>{html.escape(title)} · "
            f"{figures.rows:,} rows</p><h2>Per day</h2>{_bars('cost per day', cost)}{_bars('errors per day', errors)}"
            f"<h2>Per day and job</h2><table id=days><tr>{''.join(f'<th>{h}</th>' for h in heads)}</tr>{body}"
            "</table><p class=muted>est. cost counts answered rows; cost is the gateway's figure where it sent one, "
            "else the reported usage at the profile's prices.</p></body></html>")


def write_ledger_report(url: str, storage_options: dict | None = None, out: str | None = None) -> str:
    """Write the page of a summarize ledger at `url`; returns where it went."""
    output = OutputConfig(url=url, storage_options=dict(storage_options or {}))
    figures = ledger_figures(output)
    if not figures.rows:
        raise ConfigError(f"{url}: no ledger rows; run `vidbatch run CONFIG` with output.url {url} first")
    page = render(figures, url)
    target = out or url.rstrip("/") + "/" + DEFAULT_NAME
    fs, path = fsspec.core.url_to_fs(target, **output.storage_options)
    put_atomic(fs, path, page.encode())
    return target


def is_index_output(url: str, storage_options: dict | None = None) -> bool:
    """True for an index output (it holds index/ beside ledger/), False for a summarize ledger."""
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    return bool(fs.exists(path.rstrip("/") + "/index"))
