"""Index entries: spans of structured answers placed on each video's absolute timeline."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

import pyarrow as pa

from tasks.config.index import EntryMap
from tasks.config.run import OutputConfig
from tasks.record.latest import LatestStore, StoreSpec
from tasks.record.tables import UTC_TS, read_table, write_table

ENTRY_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("job", pa.string()), ("created_at", UTC_TS), ("entry_id", pa.string()),
    ("source_uri", pa.string()), ("source_key", pa.string()),
    ("request_key", pa.string()),                  # the ledger row the entry came from (the first, when merged)
    ("request_keys", pa.list_(pa.string())),       # every ledger row merged into it
    ("stage", pa.string()),                        # extract (per segment or pack) | reduce (whole-video call)
    ("kind", pa.string()),                         # chapter, event, key_term, on_screen_text, ..., video, summary
    ("start_s", pa.float64()), ("end_s", pa.float64()),  # seconds on the source's timeline, within [0, duration]
    ("label", pa.string()), ("text", pa.string()), ("confidence", pa.float64()),
    ("attributes", pa.string()),                   # the item's other fields, as JSON
    ("segment_index", pa.int32()), ("video_duration_s", pa.float64()),
    ("provider", pa.string()), ("model", pa.string()),
])


ENTRY_COLUMNS = ENTRY_SCHEMA.names


VIDEO, SUMMARY = "video", "summary"  # the kinds every indexed video gets: its span, and its summary (reduce)


LABEL_FIELDS = ("label", "title", "name", "term", "topic", "type", "kind", "category", "object", "text")


TEXT_FIELDS = ("description", "summary", "text", "definition", "details", "explanation", "caption", "content")


def singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-1] if name.endswith("s") and not name.endswith("ss") else name


@dataclass(frozen=True)
class EntryRule:
    """How the items of one array property become entries: which fields hold times, label, text, confidence."""

    prop: str
    kind: str
    start: str
    end: str
    label: str | None
    text: str | None
    confidence: str | None

    @classmethod
    def of(cls, prop: str, m: EntryMap, schema: dict) -> EntryRule:
        fields = schema["properties"][prop]["items"]["properties"]
        strings = [f for f, s in fields.items() if isinstance(s, dict) and _is_string(s)]
        label = m.label or next((f for f in LABEL_FIELDS if f in strings), None)
        text = m.text or next((f for f in TEXT_FIELDS if f in strings and f != label), None)
        confidence = m.confidence or ("confidence" if "confidence" in fields else None)
        return cls(prop, m.kind or singular(prop), m.start, m.end, label, text, confidence)

    def used(self) -> set[str]:
        return {f for f in (self.start, self.end, self.label, self.text, self.confidence) if f}

    def spans_problem(self, answer: dict, where: str) -> str | None:
        """A span whose end comes before its start, said so that a repair request can fix it."""
        for i, item in enumerate(answer.get(self.prop) or []):
            start, end = item.get(self.start), item.get(self.end)
            if _num(start) and _num(end) and end < start:
                return f"{where}.{self.prop}[{i}]: {self.end} ({end}) is before {self.start} ({start})"
        return None

    def entries(self, answer: dict, offset: float, lo: float, hi: float) -> list[dict]:
        """This rule's entries of one answer: times shifted by `offset`, clipped to [lo, hi] (dropped if outside)."""
        return [e for _, e in self.spans(answer, offset, lo, hi)]

    def spans(self, answer: dict, offset: float, lo: float, hi: float) -> list[tuple[dict, dict]]:
        """(item, entry) for each item of this rule's property that lies within [lo, hi] once shifted."""
        out = []
        for item in answer.get(self.prop) or []:
            if not isinstance(item, dict) or not _num(item.get(self.start)):
                continue
            start = offset + float(item[self.start])
            end = offset + float(item[self.end]) if _num(item.get(self.end)) else start
            if start > hi or end < lo:
                continue
            conf = item.get(self.confidence) if self.confidence else None
            attributes = {k: v for k, v in item.items() if k not in self.used()}
            out.append((item, {
                "kind": self.kind, "start_s": round(max(lo, start), 3), "end_s": round(min(hi, end), 3),
                "label": _text(item.get(self.label)) if self.label else None,
                "text": _text(item.get(self.text)) if self.text else None,
                "confidence": float(conf) if _num(conf) else None,
                "attributes": json.dumps(attributes, ensure_ascii=False, sort_keys=True)}))
        return out


def _is_string(schema: dict) -> bool:
    t = schema.get("type")
    return t == "string" or isinstance(t, list) and "string" in t


def _num(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _text(v: Any) -> str | None:
    return None if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def per_video_schema(schema: dict) -> dict:
    """The schema of a packed request's answer: one item per video, each the per-video schema plus its number."""
    item = {**schema, "properties": {"video": {"type": "integer", "description": "the video's position in this "
                                                "request: 1 for the first video, 2 for the second, ..."},
                                     **schema["properties"]},
            "required": ["video", *[r for r in schema.get("required", []) if r != "video"]]}
    return {"type": "object", "additionalProperties": False, "required": ["videos"],
            "properties": {"videos": {"type": "array", "description": "one item per video of the request, in order",
                                      "items": item}}}


def spans_problem(rules: Iterable[EntryRule], answer: dict, where: str = "$") -> str | None:
    for rule in rules:
        if problem := rule.spans_problem(answer, where):
            return problem
    return None


def merge_entries(entries: list[dict], gap_s: float) -> list[dict]:
    """Merge entries of one video, stage, kind and label from different requests that overlap or lie within gap_s.

    Entries of one request are never merged with each other: a model that lists two people at once means two.
    """
    out: list[dict] = []
    open_by: dict[tuple, dict] = {}
    for e in sorted(entries, key=lambda e: (e["start_s"], e["end_s"])):
        key = (e["source_key"], e["stage"], e["kind"], " ".join((e["label"] or "").casefold().split()))
        g = open_by.get(key)
        if g is not None and e["start_s"] <= g["end_s"] + gap_s and not set(e["request_keys"]) & set(g["request_keys"]):
            g["end_s"] = max(g["end_s"], e["end_s"])
            if e["text"] and e["text"] not in (g["text"] or ""):
                g["text"] = f"{g['text']} {e['text']}" if g["text"] else e["text"]
            if e["confidence"] is not None:
                g["confidence"] = max(g["confidence"] or 0.0, e["confidence"])
            g["attributes"] = json.dumps({**json.loads(e["attributes"]), **json.loads(g["attributes"])},
                                         ensure_ascii=False, sort_keys=True)
            g["request_keys"] = g["request_keys"] + [k for k in e["request_keys"] if k not in g["request_keys"]]
            continue
        g = dict(e)
        out.append(g)
        open_by[key] = g
    return out


def entry_id(e: dict) -> str:
    material = "|".join(str(e[c]) for c in ("source_key", "stage", "kind", "start_s", "end_s", "label"))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def entries_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{c: r.get(c) for c in ENTRY_COLUMNS} for r in rows], schema=ENTRY_SCHEMA)


def write_entries(rows: list[dict], output: OutputConfig, run_id: str) -> list[str]:
    """Write entries as one file per date partition, each whole or not at all."""
    return write_table(entries_table(rows), output, run_id, label="entries") if rows else []


def read_entries(output: OutputConfig, columns: list[str] | None = None) -> pa.Table | None:
    """The entries table, or None when nothing was written yet."""
    return read_table(output, ENTRY_SCHEMA, columns)

class EntryStore(LatestStore):
    """What the entries table holds for a batch of listed videos, by source URI (`OUTPUT/index/_state/latest/`):
    their `video` entries and the reduce calls whose entries are written, never the whole table."""

    spec = StoreSpec(ENTRY_SCHEMA, ("source_uri", "entry_id", "source_key", "request_key", "stage", "kind",
                                    "created_at"), by="source_uri", key="entry_id")
