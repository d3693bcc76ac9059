"""Structured answers: localapi fills the JSON schema a request asks for from what it decoded.

A request asks for structure with `response_format` ({"type": "json_schema", "json_schema": {"name", "schema"}}
or {"type": "json_object"}) or by stating a JSON schema in its prompt. The schema is filled generically from
its properties: an array of objects with start and end numbers gets one item per scene (times in the video's
own seconds), strings are labels or descriptions from the scene's dominant colour, motion and bright object,
enums take the value matching what was seen, confidence-like numbers 0.9, a `video` integer the video's
position in the request. A request without videos (a reduce over earlier answers) is filled from the spans
found in the JSON of its prompt, joining touching spans of one label.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from localapi.dialects import invalid
from localapi.media import Scene, VideoFacts

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
COLOURS = {  # name -> RGB; the nearest one names a scene's dominant colour
    "red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 60, 200), "yellow": (220, 200, 40),
    "purple": (160, 40, 180), "cyan": (30, 190, 190), "orange": (230, 130, 30), "pink": (230, 130, 180),
    "white": (235, 235, 235), "grey": (128, 128, 128), "black": (15, 15, 15), "brown": (120, 70, 30),
}
STARTS, ENDS = {"start", "begin", "from", "since"}, {"end", "until", "stop", "to"}
CONFIDENCE = {"confidence", "score", "probability", "certainty", "likelihood"}
LABELS = {"label", "title", "name", "term", "topic", "type", "kind", "category", "object", "heading", "keyword", "tag"}
TEXTS = {"text", "description", "summary", "definition", "details", "explanation", "caption", "content", "notes"}
PLACES = {"region", "position", "location", "where", "area", "zone", "place"}
JOIN_GAP_S = 1.0


@dataclass(frozen=True)
class Wanted:
    """The structure a request asks for: how (json_schema, json_object or prompt) and the schema, if any."""

    mode: str
    schema: dict | None = None


def requested(body: Any, summary: dict | None = None) -> Wanted | None:
    """The structure a request body asks for, or None; ApiError (400) for a malformed response_format."""
    if not isinstance(body, dict):
        return None
    wanted = _response_format(body.get("response_format"))
    if wanted is None:
        schema = next((o for t in _texts(body) for o in _json_objects(t) if _is_schema(o)), None)
        wanted = Wanted("prompt", schema) if schema is not None else None
    if wanted is not None and summary is not None:
        summary["structured"] = wanted.mode
    return wanted


def _response_format(rf: Any) -> Wanted | None:
    if rf is None:
        return None
    where = "response_format"
    if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
        raise invalid(f"{where} must be an object whose type is text, json_object or json_schema", where,
                      "invalid_response_format")
    if rf["type"] == "text":
        return None
    if rf["type"] == "json_object":
        return Wanted("json_object")
    js = rf.get("json_schema")
    if not isinstance(js, dict) or not isinstance(js.get("name"), str) or not NAME.match(js["name"]):
        raise invalid(f"{where}.json_schema must be an object with a name of 1-64 letters, digits, _ or -",
                      f"{where}.json_schema.name", "invalid_response_format")
    if not isinstance(js.get("schema"), dict):
        raise invalid(f"{where}.json_schema.schema must be a JSON schema object", f"{where}.json_schema.schema",
                      "invalid_response_format")
    return Wanted("json_schema", js["schema"])


def answer(wanted: Wanted, body: dict, facts: list[VideoFacts], break_schema: bool = False) -> str:
    """The answer text: JSON filling the schema (fenced in prompt mode, as models do); `break_schema` drops a
    required property so the answer is valid JSON that fails its schema."""
    if wanted.schema is None:
        value: Any = {"videos": [_facts(i + 1, f) for i, f in enumerate(facts)]}
    else:
        spans = None if facts else _input_spans(_texts(body, skip_schema=True))
        ctx = _Ctx(video=0 if len(facts) <= 1 else None)
        value = _Filler(wanted.schema, facts, spans).value(wanted.schema, (), ctx)
    if break_schema:
        value = _broken(value, wanted.schema or {})
    text = json.dumps(value, ensure_ascii=False)
    return f"```json\n{text}\n```" if wanted.mode == "prompt" else text


def _facts(index: int, f: VideoFacts) -> dict:
    return {"video": index, "duration_s": f.duration, "width": f.width, "height": f.height, "has_audio": f.has_audio,
            "scenes": [{"start_s": s.start, "end_s": s.end, "colour": colour_name(s.rgb), "motion": s.moving}
                       for s in f.scenes]}


def _broken(value: Any, schema: dict) -> Any:
    required = schema.get("required") or []
    if isinstance(value, dict) and required and required[0] in value:
        return {k: v for k, v in value.items() if k != required[0]}
    return ["not", "what", "the", "schema", "asks"]


# -- reading requests ----------------------------------------------------------------------------------------

def _texts(body: dict, skip_schema: bool = False) -> list[str]:
    """The system and user texts of a request, in order (assistant turns, such as a repaired answer, left out)."""
    out = []
    messages = body.get("messages")
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user"):
            continue
        content = m.get("content")  # not validated yet: anything may be here
        parts: list[object]  # the texts, kept only when they are strings
        if isinstance(content, str):
            parts = [content]
        elif isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        else:
            parts = []
        out += [p for p in parts if isinstance(p, str)]
    return out


def _json_objects(text: str) -> list[Any]:
    """The top-level JSON objects written anywhere in a text."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) != -1:
        try:
            obj, i = decoder.raw_decode(text, i)
            out.append(obj)
        except ValueError:
            i += 1
    return out


def _is_schema(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("properties"), dict) and (
        obj.get("type") == "object" or "$schema" in obj)


def _words(name: str) -> set[str]:
    """`startTime`, `start_s`, `on-screen text` -> {"start", "time"}, {"start", "s"}, {"on", "screen", "text"}."""
    return {w.lower() for w in re.split(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])", name) if w}


def _role(name: str) -> str | None:
    words = _words(name)
    for role, names in (("start", STARTS), ("end", ENDS), ("confidence", CONFIDENCE)):
        if words & names:
            return role
    if words & {"duration", "length"}:
        return "duration"
    return "video" if words & {"video"} else None


@dataclass(frozen=True)
class Span:
    """A time span to fill an item from: a decoded scene, or a span read from the prompt's JSON."""

    start: float
    end: float
    label: str
    scene: Scene | None = None


def _input_spans(texts: list[str]) -> dict[str, list[Span]]:
    """Spans in the prompt's JSON (objects with numeric start and end), by the name of the array holding them."""
    found: dict[str, list[Span]] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, dict):
            start = next((v for k, v in value.items() if _role(k) == "start" and _number(v)), None)
            end = next((v for k, v in value.items() if _role(k) == "end" and _number(v)), None)
            if start is not None and end is not None:
                strings = {k: v for k, v in value.items() if isinstance(v, str)}
                label = next((v for k, v in strings.items() if _words(k) & LABELS), "")
                found.setdefault(key, []).append(Span(float(start), float(end), label))
            for k, v in value.items():
                walk(v, k)

    for t in texts:
        for obj in _json_objects(t):
            if not _is_schema(obj):
                walk(obj, "")
    return found


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _joined(spans: list[Span]) -> list[Span]:
    """Spans in order, touching or overlapping ones of one label joined."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, s.end)):
        last = out[-1] if out else None
        if last and last.label.casefold() == s.label.casefold() and s.start <= last.end + JOIN_GAP_S:
            out[-1] = replace(last, end=max(last.end, s.end))
        else:
            out.append(s)
    return out


# -- filling a schema ---------------------------------------------------------------------------------------

def colour_name(rgb: tuple[int, int, int]) -> str:
    return min(COLOURS, key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOURS[n], rgb, strict=True)))


def region(at: tuple[float, float] | None) -> str:
    if at is None:
        return "nowhere in particular"
    x, y = at
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


@dataclass(frozen=True)
class _Ctx:
    """Where filling is: which video (0-based; None: all), which span, and the property names on the way."""

    video: int | None = 0
    span: Span | None = None
    path: tuple[str, ...] = ()


class _Filler:
    def __init__(self, root: dict, facts: list[VideoFacts], spans: dict[str, list[Span]] | None):
        self.root, self.facts, self.input = root, facts, spans
        self.primary = self.first_span_array(root, "", set())  # the array an overview sentence lists

    def first_span_array(self, schema: Any, name: str, seen: set) -> str:
        """The name of the schema's first array of objects with start and end numbers ("" when none)."""
        schema = self.resolve(schema)
        if id(schema) in seen:
            return ""
        seen.add(id(schema))
        item = self.resolve(schema.get("items"))
        if {"start", "end"} <= {_role(k) for k in item.get("properties") or {}}:
            return name
        for key, sub in [*(schema.get("properties") or {}).items(), *([(name, item)] if item else [])]:
            if found := self.first_span_array(sub, key, seen):
                return found
        return ""

    def resolve(self, schema: Any) -> dict:
        if not isinstance(schema, dict):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = self.root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            return self.resolve({**target, **{k: v for k, v in schema.items() if k != "$ref"}})
        for key in ("anyOf", "oneOf"):
            options = [self.resolve(o) for o in schema.get(key) or []]
            options = [o for o in options if o.get("type") != "null"] or options
            if options:
                return {**{k: v for k, v in schema.items() if k != key}, **options[0]}
        return schema

    def spans(self, ctx: _Ctx, name: str) -> list[Span]:
        if self.input is not None:
            group = self.input.get(name) or (max(self.input.values(), key=len) if self.input else [])
            return _joined(group)
        f = self.facts[ctx.video or 0] if self.facts else None
        return [Span(s.start, s.end, colour_name(s.rgb), scene=s) for s in f.scenes] if f else []

    def value(self, schema: Any, path: tuple[str, ...], ctx: _Ctx) -> Any:
        schema = self.resolve(schema)
        name = path[-1] if path else ""
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.choose(schema["enum"], ctx)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        kind = kind or ("object" if "properties" in schema else "array" if "items" in schema else "string")
        ctx = replace(ctx, path=path)
        if kind == "object":
            return {k: self.value(s, path + (k,), ctx) for k, s in (schema.get("properties") or {}).items()}
        if kind == "array":
            return self.array(schema, path, ctx)
        if kind in ("number", "integer"):
            n = self.number(name, schema, ctx)
            return int(round(n)) if kind == "integer" else round(n, 3)
        if kind == "boolean":
            words = _words(name)
            if words & {"audio", "sound", "speech"}:
                return bool(self.facts and self.facts[ctx.video or 0].has_audio)
            return bool(ctx.span and ctx.span.scene and ctx.span.scene.moving) if words & {"motion", "moving"} \
                else True
        if kind == "null":
            return None
        return self.string(name, ctx)

    def array(self, schema: dict, path: tuple[str, ...], ctx: _Ctx) -> list:
        item = self.resolve(schema.get("items"))
        props = item.get("properties") or {}
        roles = {_role(k) for k in props}
        name = path[-1] if path else ""
        if {"start", "end"} <= roles:
            out = [self.value(item, path, replace(ctx, span=s)) for s in self.spans(ctx, name)]
        elif "video" in roles and self.facts:
            out = [self.value(item, path, replace(ctx, video=i)) for i in range(len(self.facts))]
        elif item.get("type") == "string" and not item.get("enum"):
            out = list(dict.fromkeys(s.label for s in self.spans(ctx, name)))
        elif item.get("type") in ("number", "integer"):
            out = [s.start for s in self.spans(ctx, name)]
        else:
            out = [self.value(item, path, ctx)]
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        while out and len(out) < low:
            out.append(out[-1])
        return out[:high] if isinstance(high, int) else out

    def number(self, name: str, schema: dict, ctx: _Ctx) -> float:
        role, span = _role(name), ctx.span
        if role == "start" and span:
            n = span.start
        elif role == "end" and span:
            n = span.end
        elif role == "duration":
            n = span.end - span.start if span else self.duration(ctx)
        elif role == "confidence":
            n = 0.9
        elif role == "video":
            n = (ctx.video or 0) + 1
        elif _words(name) & {"count", "number", "total", "scenes"}:
            n = len(self.spans(ctx, name))
        else:
            n = schema.get("minimum", 0)
        low, high = schema.get("minimum"), schema.get("maximum")
        return min(max(n, low if low is not None else n), high if high is not None else n)

    def duration(self, ctx: _Ctx) -> float:
        if self.facts:
            return self.facts[ctx.video or 0].duration
        return max((s.end for group in (self.input or {}).values() for s in group), default=0.0)

    def choose(self, options: list, ctx: _Ctx) -> Any:
        span = ctx.span
        seen = {"scene", "change"}
        if span:
            seen.add(span.label.casefold())
            if span.scene:
                seen |= {"motion", "moving", "movement"} if span.scene.moving else {"static", "still", "none"}
        for o in options:
            if isinstance(o, str) and any(w in o.casefold() for w in seen if w):
                return o
        return next((o for o in options if isinstance(o, str) and o.casefold() in ("other", "unknown")), options[0])

    def string(self, name: str, ctx: _Ctx) -> str:
        words, span = _words(name), ctx.span
        on_screen = any(_words(p) & {"screen", "ocr", "slide", "caption"} for p in ctx.path)
        if span is None:
            return self.overview(ctx)
        if words & PLACES:
            return region(span.scene.bright_at) if span.scene else "whole frame"
        if on_screen and words & {"text", "content", "caption"}:
            return span.label.upper()
        if words & LABELS:
            titled = words & {"title", "heading", "name"} and self.input is None
            return f"{span.label.capitalize()} scene" if titled else span.label
        return self.sentence(span)

    def sentence(self, span: Span) -> str:
        if span.scene is None:
            return f"{span.label} from {span.start:.1f} s to {span.end:.1f} s."
        text = f"A {span.label} scene lasting {span.end - span.start:.1f} s"
        if span.scene.moving:
            text += f"; a bright object moves, first seen at the {region(span.scene.bright_at)} of the frame"
        return text + "."

    def overview(self, ctx: _Ctx) -> str:
        spans = self.spans(ctx, self.primary)
        if not spans:
            return "Nothing to describe: no video and no time spans were given."
        parts = ", ".join(f"{s.label} ({s.start:.1f}-{s.end:.1f} s)" for s in spans)
        return f"{len(spans)} scene{'s' if len(spans) != 1 else ''} over {self.duration(ctx):.1f} s: {parts}."
