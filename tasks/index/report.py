"""A self-contained HTML page of an index: per video a timeline of its entries with thumbnails, and token usage."""

from __future__ import annotations

import base64
import colorsys
import hashlib
import html
import json
from fractions import Fraction
from typing import Any

import av
import fsspec

from tasks.config.run import OutputConfig
from tasks.errors import ConfigError, redact
from tasks.index.entries import SUMMARY, VIDEO, read_entries
from tasks.record.ledger import read_rows
from tasks.record.tables import put_atomic

THUMB_WIDTH = 160


LANE_ORDER = ["chapter", "event", "topic", "key_term", "on_screen_text"]


USAGE_COLUMNS = ["run_id", "created_at", "source_uri", "status", "stage", "repairs", "prompt_tokens",
                 "completion_tokens", "total_tokens", "estimated_prompt_tokens"]


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2430;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 2px;word-break:break-all}
.muted{color:#667085}.video{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:16px;margin:18px 0}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #e4e7ec;text-align:right}
th:first-child,td:first-child{text-align:left}.timeline{margin:12px 0 10px}
.lane{display:flex;align-items:center;margin:3px 0}.lane-name{width:150px;flex:none;font-size:12px;color:#475467}
.track{position:relative;flex:1;height:22px;background:#eef0f3;border-radius:4px;overflow:hidden}
.entry{position:absolute;top:2px;bottom:2px;border-radius:3px;font-size:11px;line-height:18px;padding:0 4px;
overflow:hidden;white-space:nowrap;text-overflow:ellipsis;color:#111;box-sizing:border-box;border:1px solid #0002}
.axis{position:relative;height:16px;margin-left:150px;font-size:11px;color:#667085}
.axis span{position:absolute;transform:translateX(-50%)}.axis span:first-child{transform:none}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px}
.card{border:1px solid #e4e7ec;border-radius:6px;padding:6px;font-size:12px;background:#fcfcfd}
.card img{width:100%;display:block;border-radius:4px;background:#ddd}.card b{display:block;margin-top:4px}
.summary{margin:6px 0 0;max-width:900px}
"""


def write_report(output_url: str, storage_options: dict | None = None, out: str | None = None,
                 notes: list[str] | None = None) -> str:
    """Write the report of an index output (holding ledger/ and index/); returns where it went. Why thumbnails are
    missing, if they are, goes to `notes` (once)."""
    options = dict(storage_options or {})
    root = output_url.rstrip("/")
    try:
        entries = read_entries(OutputConfig(url=root + "/index", storage_options=options))
    except Exception as e:  # noqa: BLE001 - any storage client's refusal (botocore ...) is one line naming OUTPUT
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(redact(f"{root}/index: cannot be read: {type(e).__name__}: {first}"
                                 " (for an S3-compatible endpoint pass --storage-option endpoint_url=...)")) from None
    if entries is None or entries.num_rows == 0:
        raise ConfigError(f"{root}/index: no index entries; run `vidbatch index CONFIG` with output.url {root} first")
    usage = read_rows(OutputConfig(url=root + "/ledger", storage_options=options), USAGE_COLUMNS)
    thumbnails = Thumbnails(options)
    page = render(entries.to_pylist(), usage.to_pylist() if usage is not None else [], thumbnails, root)
    if (note := thumbnails.note()) is not None and notes is not None:
        notes.append(note)
    target = out or root + "/report.html"
    fs, path = fsspec.core.url_to_fs(target, **options)
    put_atomic(fs, path, page.encode())
    return fs.unstrip_protocol(path) if "://" in target else path


class Thumbnails:
    """JPEG data URIs of source frames (PyAV: seek, decode, scale, encode), one open per video."""

    def __init__(self, storage_options: dict):
        self.options = storage_options
        self.unreadable: dict[str, str] = {}  # storage root (scheme://bucket) -> why its videos could not be read
        self.missing: list[str] = []           # videos shown without thumbnails

    def frames(self, uri: str, times: list[float]) -> dict[float, str | None]:
        """time -> data URI of the first frame at or after it (None when the video cannot be read)."""
        out: dict[float, str | None] = {t: None for t in times}
        store = "/".join(uri.split("/", 3)[:3]) if "://" in uri else "local"
        if store in self.unreadable:  # one failure per bucket: an endpoint it was not told about fails them all
            self.missing.append(uri)
            return out
        try:
            fs, path = fsspec.core.url_to_fs(uri, **self.options)
            with fs.open(path, "rb", block_size=2 ** 20) as f, av.open(f) as c:
                vs = c.streams.video[0]
                origin = float(c.start_time / av.time_base) if c.start_time is not None else 0.0
                for t in sorted(set(times)):
                    out[t] = self._frame(c, vs, t + origin)
        except (OSError, av.error.FFmpegError, IndexError, ValueError):
            self.missing.append(uri)  # this video alone: gone, or not a video any more
        except Exception as e:  # noqa: BLE001 - the storage client's own errors (botocore ...): the store is unreadable
            self.unreadable[store] = redact(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", 200)
            self.missing.append(uri)
        return out

    def note(self) -> str | None:
        """The reason thumbnails are missing, said once (None when every video could be read)."""
        if not self.missing:
            return None
        why = "; ".join(f"{store}: {reason}" for store, reason in self.unreadable.items()) or \
            "the source could not be read or decoded"
        hint = " (pass --storage-option endpoint_url=... for an S3-compatible endpoint)" if self.unreadable else ""
        return f"{len(self.missing)} video(s) shown without thumbnails: {why}{hint}"

    @staticmethod
    def _frame(c, vs, t: float) -> str | None:
        c.seek(max(0, int(t / vs.time_base)), stream=vs, backward=True)
        chosen = None
        for frame in c.decode(vs):
            chosen = frame
            if frame.time is not None and frame.time >= t - 1e-3:
                break
        if chosen is None:
            return None
        height = max(2, round(THUMB_WIDTH * chosen.height / chosen.width / 2) * 2)
        codec = av.CodecContext.create("mjpeg", "w")
        codec.width, codec.height, codec.pix_fmt, codec.time_base = THUMB_WIDTH, height, "yuvj420p", Fraction(1, 25)
        scaled = chosen.reformat(width=THUMB_WIDTH, height=height, format="yuvj420p")
        data = b"".join(bytes(p) for p in [*codec.encode(scaled), *codec.encode(None)])
        return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def colour(label: str | None) -> str:
    """A light colour per label, the same label always the same colour."""
    h = int(hashlib.sha256((label or "").casefold().encode()).hexdigest()[:6], 16) / 0xFFFFFF
    r, g, b = colorsys.hls_to_rgb(h, 0.78, 0.65)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _latest(entries: list[dict]) -> dict[str, list[dict]]:
    """source_uri -> the entries of its newest indexed version (by its `video` entry), one per entry_id."""
    newest: dict[str, dict] = {}
    for e in entries:
        if e["kind"] == VIDEO and (e["source_uri"] not in newest
                                   or e["created_at"] > newest[e["source_uri"]]["created_at"]):
            newest[e["source_uri"]] = e
    keys = {v["source_key"] for v in newest.values()}
    by_id: dict[str, dict] = {}
    for e in sorted(entries, key=lambda e: e["created_at"]):
        if e["source_key"] in keys:
            by_id[e["entry_id"]] = e
    out: dict[str, list[dict]] = {}
    for e in sorted(by_id.values(), key=lambda e: (e["start_s"], e["end_s"])):
        out.setdefault(e["source_uri"], []).append(e)
    return dict(sorted(out.items()))


def _lanes(entries: list[dict]) -> list[tuple[str, list[dict]]]:
    lanes: dict[str, list[dict]] = {}
    for e in entries:
        if e["kind"] in (VIDEO, SUMMARY):
            continue
        name = f"{e['kind']} (whole video)" if e["stage"] == "reduce" else e["kind"]
        lanes.setdefault(name, []).append(e)

    def order(name: str) -> tuple:
        kind = name.split(" ")[0]
        return ("(whole video)" not in name, LANE_ORDER.index(kind) if kind in LANE_ORDER else len(LANE_ORDER), name)

    return sorted(lanes.items(), key=lambda kv: order(kv[0]))


def _primary(entries: list[dict]) -> list[dict]:
    """The entries shown as cards: the whole-video chapters if there are any, else chapters and events."""
    for wanted in (lambda e: e["stage"] == "reduce" and e["kind"] == "chapter",
                   lambda e: e["kind"] in ("chapter", "event"), lambda e: e["kind"] not in (VIDEO, SUMMARY)):
        chosen = [e for e in entries if wanted(e)]
        if chosen:
            return chosen
    return []


def _timeline(entries: list[dict], duration: float) -> str:
    esc = html.escape
    rows = []
    for name, items in _lanes(entries):
        boxes = []
        for e in items:
            left = 100 * e["start_s"] / duration
            width = max(0.5, 100 * (e["end_s"] - e["start_s"]) / duration)
            tip = f"{e['label'] or e['kind']} {clock(e['start_s'])}-{clock(e['end_s'])}" + (
                f": {e['text']}" if e["text"] else "")
            boxes.append(f'<div class="entry" style="left:{left:.3f}%;width:{width:.3f}%;'
                         f'background:{colour(e["label"])}" title="{esc(tip)}">{esc(e["label"] or "")}</div>')
        rows.append(f'<div class="lane"><div class="lane-name">{esc(name)}</div>'
                    f'<div class="track">{"".join(boxes)}</div></div>')
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600) if duration / s <= 10), 7200)
    ticks = "".join(f'<span style="left:{100 * t / duration:.3f}%">{clock(t)}</span>'
                    for t in range(0, int(duration) + 1, step) if t < duration * 0.97 or t == 0)
    return f'<div class="timeline">{"".join(rows)}<div class="axis">{ticks}</div></div>'


def _cards(entries: list[dict], thumbs: dict[float, str | None]) -> str:
    esc = html.escape
    cards = []
    for e in entries:
        img = thumbs.get(e["start_s"])
        extra = json.loads(e["attributes"] or "{}")
        details = ", ".join(f"{k}: {v}" for k, v in extra.items() if isinstance(v, (str, int, float)))
        cards.append(
            '<div class="card">' + (f'<img alt="frame at {clock(e["start_s"])}" src="{img}">' if img else "")
            + f'<b>{esc(e["label"] or e["kind"])}</b><span class="muted">{e["kind"]} · {clock(e["start_s"])}'
            f'–{clock(e["end_s"])}' + (f' · {e["confidence"]:.2f}' if e["confidence"] is not None else "")
            + "</span>" + (f"<div>{esc(e['text'])}</div>" if e["text"] else "")
            + (f'<div class="muted">{esc(details)}</div>' if details else "") + "</div>")
    return f'<div class="cards">{"".join(cards)}</div>'


def _usage_table(rows: list[dict]) -> str:
    runs: dict[str, dict[str, Any]] = {}
    for r in rows:
        u = runs.setdefault(r["run_id"], {"started": r["created_at"], "requests": 0, "ok": 0, "error": 0, "reduce": 0,
                                          "repairs": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                          "total_tokens": 0, "estimated_prompt_tokens": 0})
        u["started"] = min(u["started"], r["created_at"])
        u["requests"] += 1
        u["ok" if r["status"] == "ok" else "error"] += 1
        u["reduce"] += r["stage"] == "reduce"
        for k in ("repairs", "prompt_tokens", "completion_tokens", "total_tokens", "estimated_prompt_tokens"):
            u[k] += r[k] or 0
    cols = ["requests", "ok", "error", "reduce", "repairs", "prompt_tokens", "completion_tokens", "total_tokens",
            "estimated_prompt_tokens"]
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in ["run", "started (UTC)", *cols])
    body = ""
    for run_id, u in sorted(runs.items(), key=lambda kv: kv[1]["started"], reverse=True):
        body += (f"<tr><td>{html.escape(run_id[:8])}</td><td>{u['started']:%Y-%m-%d %H:%M:%S}</td>"
                 + "".join(f"<td>{u[c]:,}</td>" for c in cols) + "</tr>")
    total = {c: sum(u[c] for u in runs.values()) for c in cols}
    body += "<tr><th>all runs</th><th></th>" + "".join(f"<th>{total[c]:,}</th>" for c in cols) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def render(entries: list[dict], usage: list[dict], thumbnails: Thumbnails, title: str) -> str:
    """The page: token usage by run, then one section per video with its timeline and entry cards."""
    esc = html.escape
    videos = _latest(entries)
    sections = []
    for uri, items in videos.items():
        video = next(e for e in items if e["kind"] == VIDEO)
        duration = max(video["end_s"] or 0.0, max(e["end_s"] for e in items)) or 1.0
        summary = next((e["text"] for e in items if e["kind"] == SUMMARY), None)
        cards = _primary(items)
        thumbs = thumbnails.frames(uri, [e["start_s"] for e in cards])
        mine = [r for r in usage if r["source_uri"] == uri]
        tokens = sum(r["total_tokens"] or 0 for r in mine)
        sections.append(
            f'<section class="video"><h2>{esc(uri.rsplit("/", 1)[-1])}</h2><div class="muted">{esc(uri)} · '
            f'{clock(duration)} · {len(items) - 1} entries · {tokens:,} tokens</div>'
            + (f'<p class="summary">{esc(summary)}</p>' if summary else "")
            + _timeline(items, duration) + _cards(cards, thumbs) + "</section>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>vidbatch index: {esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>vidbatch index</h1><div class=\"muted\">{esc(title)} · {len(videos)} videos</div>"
            + (f'<p class="muted note">{esc(note)}</p>' if (note := thumbnails.note()) else "") +
            f"<h3>Token usage</h3>{_usage_table(usage)}" + "".join(sections) + "</body></html>")
