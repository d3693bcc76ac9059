"""Index configs (`vidbatch index`): the JSON schema asked of each segment and how answers become entries."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from tasks.config.connection import StrictModel
from tasks.config.run import RunConfig

REDUCE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["summary", "chapters"],
    "properties": {
        "summary": {"type": "string", "description": "a few sentences on the whole video"},
        "chapters": {"type": "array", "description": "the whole video's chapters, in order, covering its timeline",
                     "items": {"type": "object", "additionalProperties": False,
                               "required": ["start_s", "end_s", "title", "summary"],
                               "properties": {
                                   "start_s": {"type": "number", "description": "seconds from the video's start"},
                                   "end_s": {"type": "number", "description": "seconds from the video's start"},
                                   "title": {"type": "string"}, "summary": {"type": "string"}}}},
    },
}


class EntryMap(StrictModel):
    """How the items of one array property of an answer become index entries (unset fields are guessed)."""

    kind: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")  # default: the property name, singular
    label: str | None = None       # item field holding the label; default: title, label, name, term, type ...
    text: str | None = None        # item field holding the text; default: description, summary, text ...
    confidence: str | None = None  # default: "confidence" when the items have it
    start: str = "start_s"
    end: str = "end_s"


def check_entry_schema(schema: dict[str, Any], entries: dict[str, EntryMap]) -> None:
    """ValueError unless `schema` is a JSON schema of an object whose `entries` properties are arrays of spans."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as e:
        raise ValueError(f"json_schema is not a valid JSON schema: {e.message}") from None
    props = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(props, dict):
        raise ValueError("json_schema must describe an object (type: object) with properties")
    for name, rule in entries.items():
        items = (props.get(name) or {}).get("items") if isinstance(props.get(name), dict) else None
        if not isinstance(items, dict) or not isinstance(items.get("properties"), dict):
            raise ValueError(f"entries.{name}: json_schema needs a property {name!r} of type array whose items "
                             f"are objects (known properties: {', '.join(props)})")
        fields = items["properties"]
        for role in ("start", "end", "label", "text", "confidence"):
            field_name = getattr(rule, role)
            if field_name is not None and field_name not in fields:
                raise ValueError(f"entries.{name}.{role}: the items of {name!r} have no property {field_name!r} "
                                 f"(they have: {', '.join(fields)})")


class SummarySpec(StrictModel):
    """The whole-video reduce call: a text-only request over a video's segment results."""

    enabled: bool = True
    system: str = "You write whole-video summaries and chapter lists from the indexes of a video's segments."
    user: str = Field(default="Summarize the whole video and list its chapters from its segment results below. "
                      "Join chapters that continue across segments. Times are seconds on the whole video's "
                      "timeline.", min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    schema_name: str = Field(default="video_summary", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    json_schema: dict[str, Any] = Field(default_factory=lambda: REDUCE_SCHEMA)
    entries: dict[str, EntryMap] = Field(default_factory=lambda: {
        "chapters": EntryMap(kind="chapter", label="title", text="summary")})
    summary_field: str | None = "summary"  # a string property that becomes the video's `summary` entry

    @model_validator(mode="after")
    def _check(self) -> SummarySpec:
        check_entry_schema(self.json_schema, self.entries)
        if self.summary_field and self.summary_field not in self.json_schema["properties"]:
            raise ValueError(f"summary_field {self.summary_field!r} is not a property of json_schema")
        return self


class IndexSpec(StrictModel):
    """What the index flow asks of each segment, how answers become entries, and the whole-video summary."""

    schema_name: str = Field(default="video_index", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    json_schema: dict[str, Any]
    entries: dict[str, EntryMap] = Field(min_length=1)
    merge_gap_s: float = Field(default=1.0, ge=0)  # like entries of two segments this close (or overlapping) merge
    summary: SummarySpec = Field(default_factory=SummarySpec)

    @model_validator(mode="after")
    def _check(self) -> IndexSpec:
        check_entry_schema(self.json_schema, self.entries)
        return self


class IndexRunConfig(RunConfig):
    """A run config with an `index` section; output.url is a folder holding `ledger/` and `index/`."""

    index: IndexSpec
