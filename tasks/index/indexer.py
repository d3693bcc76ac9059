"""Archive indexing: structured answers per segment become entries, then a whole-video summary."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pyarrow.compute as pc

from tasks.call.client import CallResult, ProviderClient
from tasks.call.send import check_and_repair
from tasks.call.structured import ask_for_schema, check_answer, parse_answer
from tasks.config.index import IndexRunConfig
from tasks.config.prices import Prices
from tasks.config.run import OutputConfig
from tasks.dialects.registry import build_payload
from tasks.errors import redact
from tasks.index.entries import (
    SUMMARY,
    VIDEO,
    EntryRule,
    EntryStore,
    entry_id,
    merge_entries,
    per_video_schema,
    spans_problem,
)
from tasks.media.tokens import Estimate, text_tokens
from tasks.plan.items import WorkItem
from tasks.record.cost import estimate_columns
from tasks.record.ledger import SCHEMA
from tasks.record.rows import answer_fields
from tasks.record.state import IndexStateStore
from tasks.record.tables import now_utc, partition_dates, read_partitions
from tasks.secrets import redact_keys


def index_outputs(cfg: IndexRunConfig) -> tuple[OutputConfig, OutputConfig]:
    """(the ledger, the entries table): `ledger/` and `index/` under the config's output.url."""
    root = cfg.output.url.rstrip("/")
    return (cfg.output.model_copy(update={"url": root + "/ledger"}),
            cfg.output.model_copy(update={"url": root + "/index"}))


@dataclass
class VideoTodo:
    """A video whose segments are all answered: what is still missing of its index."""

    source_key: str
    segment_keys: list[str]
    reduce_key: str
    extract: bool          # its segment entries are not written yet
    call: bool             # its reduce call is to be sent
    reduce_entries: bool   # its reduce row is ok but its entries are not written yet
    dates: set[str] = field(default_factory=set)    # the ledger partitions holding those rows
    rows: list[dict] = field(default_factory=list)  # the segment rows, by segment_index
    reduce_row: dict | None = None


class Indexer:
    """An index config made concrete: the extraction run config, the schema sent, checks and entry rules."""

    def __init__(self, cfg: IndexRunConfig):
        self.config, self.spec = cfg, cfg.index
        self.packed = cfg.media.pack.max_videos > 1
        self.schema = per_video_schema(self.spec.json_schema) if self.packed else self.spec.json_schema
        self.ledger, self.entries_output = index_outputs(cfg)
        user, params = ask_for_schema(cfg.provider.structured_output, cfg.prompt.user, cfg.prompt.params,
                                      self.spec.schema_name, self.schema)
        self.run_config = cfg.model_copy(update={"output": self.ledger, "prompt": cfg.prompt.model_copy(
            update={"user": user, "params": params})})
        self.rules = [EntryRule.of(p, m, self.spec.json_schema) for p, m in self.spec.entries.items()]
        s = self.spec.summary
        self.reduce_rules = [EntryRule.of(p, m, s.json_schema) for p, m in s.entries.items()]

    # -- per segment (or pack) ---------------------------------------------------------------------------

    def check(self, text: str, pack: list[WorkItem]) -> str | None:
        """What is wrong with a segment or pack answer (schema, video numbers, spans), or None."""
        value, problem = check_answer(self.schema, text)
        if problem:
            return problem
        if not self.packed:
            return spans_problem(self.rules, value)
        numbers = [v["video"] for v in value["videos"]]
        if sorted(numbers) != list(range(1, len(pack) + 1)):
            return (f"$.videos: the request holds {len(pack)} videos, so `video` must take each of 1 to {len(pack)} "
                    f"once; got {numbers}")
        for i, v in enumerate(value["videos"]):
            if problem := spans_problem(self.rules, v, f"$.videos[{i}]"):
                return problem
        return None

    def _video_answer(self, row: dict) -> dict | None:
        try:
            answer = parse_answer(row["output_text"] or "")
            if self.packed:
                answer = next((v for v in answer["videos"] if v.get("video") == (row["pack_index"] or 0) + 1), None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return answer if isinstance(answer, dict) else None

    def _window(self, row: dict) -> tuple[float, float, float]:
        """(offset, lo, hi): a segment's start, and the part of the source's timeline its entries may cover."""
        duration = row["video_duration_s"] or float("inf")
        start = row["segment_start_s"] or 0.0
        end = row["segment_end_s"] if row["segment_end_s"] is not None else duration
        return start, max(0.0, start), min(end, duration)

    def segment_entries(self, rows: list[dict]) -> list[dict]:
        """A video's merged entries from its segment rows, on its absolute timeline."""
        found = []
        for row in rows:
            answer = self._video_answer(row)
            if answer is None:
                continue
            offset, lo, hi = self._window(row)
            for rule in self.rules:
                for e in rule.entries(answer, offset, lo, hi):
                    found.append({**e, "stage": "extract", "request_keys": [row["request_key"]],
                                  "segment_index": row["segment_index"], **_video_fields(row)})
        return merge_entries(found, self.spec.merge_gap_s)

    # -- the whole-video reduce call ---------------------------------------------------------------------

    def reduce_key(self, source_key: str, segment_keys: list[str]) -> str:
        s, p = self.spec.summary, self.config.provider
        material = {"reduce": source_key, "segments": sorted(segment_keys), "system": s.system, "user": s.user,
                    "params": s.params, "schema": s.json_schema, "provider": p.name, "model": p.model,
                    "structured_output": p.structured_output}
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()

    def reduce_prompt(self, rows: list[dict]) -> tuple[str, dict]:
        """(user prompt, params) of a video's reduce call: its segment answers with times made absolute."""
        s, first = self.spec.summary, rows[0]
        segments = []
        for row in rows:
            answer = self._video_answer(row) or {}
            offset, lo, hi = self._window(row)
            shifted = dict(answer)
            shifted.pop("video", None)
            for rule in self.rules:
                shifted[rule.prop] = [{**item, rule.start: e["start_s"], rule.end: e["end_s"]}
                                      for item, e in rule.spans(answer, offset, lo, hi)]
            segments.append({"start_s": offset, "end_s": hi, **shifted})
        context = {"video": first["source_uri"].rsplit("/", 1)[-1], "duration_s": first["video_duration_s"],
                   "segments": segments}
        user = f"{s.user}\n\nSegment results:\n{json.dumps(context, ensure_ascii=False, separators=(',', ':'))}"
        return ask_for_schema(self.config.provider.structured_output, user, s.params, s.schema_name, s.json_schema)

    def reduce_check(self, text: str) -> str | None:
        value, problem = check_answer(self.spec.summary.json_schema, text)
        return problem or spans_problem(self.reduce_rules, value)

    def reduce_entries(self, row: dict) -> list[dict]:
        """The entries of an ok reduce row: the video's summary and its chapters (already absolute)."""
        try:
            answer = parse_answer(row["output_text"] or "")
        except ValueError:
            return []
        if not isinstance(answer, dict):
            return []
        duration = row["video_duration_s"] or 0.0
        base = {"stage": "reduce", "request_keys": [row["request_key"]], "segment_index": None, **_video_fields(row)}
        out = [{**e, **base} for rule in self.reduce_rules for e in rule.entries(answer, 0.0, 0.0, duration)]
        field_name = self.spec.summary.summary_field
        if field_name and isinstance(answer.get(field_name), str):
            out.insert(0, {**base, "kind": SUMMARY, "start_s": 0.0, "end_s": duration, "label": _name(row),
                           "text": answer[field_name], "confidence": None, "attributes": "{}"})
        return out

    async def reduce(self, todo: VideoTodo, client: ProviderClient, run_id: str) -> dict:
        """Send a video's reduce call (checked, repaired once) and return its ledger row."""
        p, s = self.config.provider, self.spec.summary
        user, params = self.reduce_prompt(todo.rows)
        payload = build_payload(p.dialect, p.model, s.system, user, [], params, p.extra_body)
        estimate = text_tokens(s.system, user)
        result = await client.send(payload, estimate, todo.reduce_key)
        answered = result.completion if result.error is None else None
        problem = self.reduce_check(answered.text) if answered is not None else None
        result, repairs = await check_and_repair(client, payload, {}, result, problem, self.reduce_check,
                                                 todo.reduce_key, estimate)
        first = todo.rows[0]
        row = {c: first.get(c) for c in ("source_uri", "source_etag", "source_size", "source_mtime",
                                         "video_duration_s", "has_audio", "source_key", "segment_count")}
        row.update({"run_id": run_id, "job": self.config.job, "created_at": now_utc(), "request_key": todo.reduce_key,
                    "segment_start_s": 0.0, "segment_end_s": first["video_duration_s"], "provider": p.name,
                    "dialect": p.dialect, "model": p.model, "system_prompt": s.system, "prompt": user,
                    "request_params": json.dumps(redact_keys({**params, **p.extra_body}), sort_keys=True),
                    "estimated_prompt_tokens": estimate, "request_id": todo.reduce_key, "pack_size": 1,
                    "pack_index": 0, "repairs": repairs, "stage": "reduce",
                    **estimate_columns(Estimate(text=estimate), p.prices),
                    **_outcome(result, p.prices, Estimate(text=estimate))})
        return row

    # -- what is missing -----------------------------------------------------------------------------------

    def stores(self) -> tuple[IndexStateStore, EntryStore]:
        """The ledger's run state (this run's rows too) and the entries table's, opened now."""
        return IndexStateStore.open(self.ledger), EntryStore.open(self.entries_output)

    def todo(self, uris: list[str], ledger: IndexStateStore, entries: EntryStore, done: set[str]) -> list[VideoTodo]:
        """The videos of these listed objects whose segments are all ok but whose entries or reduce call are
        missing: their latest ledger rows and their entries looked up by URI, never the whole tables."""
        rows = ledger.rows(uris)
        if not rows.num_rows:
            return []
        latest = rows.append_column("date", partition_dates(rows["created_at"])).to_pylist()
        segments: dict[str, list[dict]] = {}
        reduced: dict[str, dict] = {}
        for r in latest:
            if r["stage"] == "reduce":
                reduced[r["request_key"]] = r
            else:
                segments.setdefault(r["source_key"], []).append(r)
        marks = entries.rows(uris) if segments else None
        marked, reduce_done = set(), set()
        if marks is not None:
            for source_key, stage, key, kind in zip(*(marks[c].to_pylist() for c in
                                                      ("source_key", "stage", "request_key", "kind")), strict=True):
                if kind == VIDEO:
                    marked.add(source_key)
                elif stage == "reduce":
                    reduce_done.add(key)
        todos = []
        for source_key, seg_rows in segments.items():
            keys = _complete(seg_rows)
            if keys is None:
                continue
            rkey = self.reduce_key(source_key, keys)
            prior = reduced.get(rkey)
            ok = prior is not None and prior["status"] == "ok"
            call = self.spec.summary.enabled and not ok and rkey not in done
            todo = VideoTodo(source_key, keys, rkey, extract=source_key not in marked, call=call,
                             reduce_entries=ok and rkey not in reduce_done,
                             dates={r["date"] for r in seg_rows if r["request_key"] in keys} |
                             ({prior["date"]} if prior is not None else set()))
            if todo.extract or todo.call or todo.reduce_entries:
                todos.append(todo)
        return todos

    def load(self, todos: list[VideoTodo]) -> list[VideoTodo]:
        """Read the full ledger rows (answers included) of these videos' segments and reduce calls, from the date
        partitions that hold them only."""
        wanted = [k for t in todos for k in (*t.segment_keys, t.reduce_key)]
        table = read_partitions(self.ledger, SCHEMA, (d for t in todos for d in t.dates),
                                pc.field("request_key").isin(wanted)) if todos else None
        latest = _latest(table.to_pylist() if table is not None else [])
        for t in todos:
            t.rows = sorted((latest[k] for k in t.segment_keys if k in latest), key=lambda r: r["segment_index"] or 0)
            t.reduce_row = latest.get(t.reduce_key)
        return [t for t in todos if len(t.rows) == len(t.segment_keys)]  # a compaction may hide one: next run

    async def finish(self, todos: list[VideoTodo], client: ProviderClient, run_id: str,
                     record: Callable[[dict], Awaitable[None]]) -> list[dict]:
        """Send the missing reduce calls (recording their rows) and return the entries still to write."""
        todos = self.load(todos)

        async def one(t: VideoTodo) -> list[dict]:
            out = []
            if t.extract:
                out += [self.video_entry(t.rows[0])] + self.segment_entries(t.rows)
            if t.call:
                t.reduce_row = await self.reduce(t, client, run_id)
                await record(t.reduce_row)
            if t.reduce_row is not None and t.reduce_row["status"] == "ok" and (t.call or t.reduce_entries):
                out += self.reduce_entries(t.reduce_row)
            return out

        found = await asyncio.gather(*(one(t) for t in todos))
        created = now_utc()
        rows = []
        for e in (e for es in found for e in es):
            e.update(run_id=run_id, job=self.config.job, created_at=created, request_key=e["request_keys"][0])
            e["entry_id"] = entry_id(e)
            rows.append(e)
        return rows

    def video_entry(self, row: dict) -> dict:
        """The entry every indexed video gets: its whole span (the report and queries list videos by it)."""
        return {"kind": VIDEO, "stage": "extract", "start_s": 0.0, "end_s": row["video_duration_s"],
                "label": _name(row), "text": None, "confidence": None, "attributes": json.dumps(
                    {"segments": row["segment_count"], "has_audio": row["has_audio"]}),
                "request_keys": [row["request_key"]], "segment_index": None, **_video_fields(row)}


def _name(row: dict) -> str:
    return row["source_uri"].rsplit("/", 1)[-1]


def _video_fields(row: dict) -> dict:
    return {c: row.get(c) for c in ("source_uri", "source_key", "video_duration_s", "provider", "model")}


def _outcome(result: CallResult, prices: Prices | None = None, estimate: Estimate | None = None) -> dict:
    """The status columns of a call's row (ok, or error with the answer kept when there was one)."""
    out = {"attempts": result.attempts, "latency_ms": result.latency_ms}
    if result.completion is not None:
        out.update(answer_fields(result.completion, prices, estimate))
    if result.error is None:
        return {**out, "status": "ok", "http_status": 200}
    err = result.error
    return {**out, "status": "error", "error_type": err.kind, "error_message": redact(str(err)),
            "http_status": getattr(err, "http_status", None)}


def _latest(rows: list[dict]) -> dict[str, dict]:
    """request_key -> its latest row."""
    latest: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["created_at"]):
        latest[r["request_key"]] = r
    return latest


def _complete(rows: list[dict]) -> list[str] | None:
    """The request_keys of a video's newest complete set of segments (every one ok), or None."""
    by_count: dict[int, dict[int, dict]] = {}
    for r in rows:
        if r["status"] == "ok":
            by_count.setdefault(r["segment_count"] or 1, {})[r["segment_index"] or 0] = r
    complete = [(max(r["created_at"] for r in segs.values()), [segs[i]["request_key"] for i in range(n)])
                for n, segs in by_count.items() if set(segs) == set(range(n))]
    return max(complete)[1] if complete else None
