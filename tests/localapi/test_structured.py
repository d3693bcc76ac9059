"""Structured answers: a JSON schema filled from the decoded video, as response_format or stated in the prompt."""

from __future__ import annotations

import json

import pytest
from jsonschema import validate

from localapi.samples import PALETTE
from localapi.structured import colour_name

SPAN = {"type": "object", "additionalProperties": False, "required": ["start_s", "end_s", "title", "confidence"],
        "properties": {"start_s": {"type": "number"}, "end_s": {"type": "number"}, "title": {"type": "string"},
                       "confidence": {"type": "number"}}}
INDEX = {"type": "object", "additionalProperties": False, "required": ["summary", "chapters", "topics", "events"],
         "properties": {
             "summary": {"type": "string"}, "chapters": {"type": "array", "items": SPAN},
             "topics": {"type": "array", "items": {"type": "string"}},
             "events": {"type": "array", "items": {"type": "object", "properties": {
                 "kind": {"enum": ["person", "vehicle", "motion", "other"]}, "start": {"type": "number"},
                 "end": {"type": "number"}, "region": {"type": "string"}, "moving": {"type": "boolean"}}}}}}


def schema_format(schema, name="ix"):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def content(resp):
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("dialect", ["openai", "gdc", "trinity"])
def test_scene_changes_become_spans_filled_from_the_schema(post, kit, api, dialect):
    body = {**kit.body(dialect), "response_format": schema_format(INDEX)}
    answer = json.loads(content(post(dialect, body)))
    validate(answer, INDEX)
    spec = kit.spec  # 6 s, a scene change every 2 s
    bounds = [0.0, *spec.scene_changes, spec.seconds]
    assert [(c["start_s"], c["end_s"]) for c in answer["chapters"]] == list(zip(bounds, bounds[1:], strict=False))
    colours = [colour_name(PALETTE[i]) for i in range(3)]
    assert [c["title"] for c in answer["chapters"]] == [f"{c.capitalize()} scene" for c in colours]
    assert answer["topics"] == colours and {c["confidence"] for c in answer["chapters"]} == {0.9}
    assert {e["kind"] for e in answer["events"]} == {"motion"} and all(e["moving"] for e in answer["events"])
    assert answer["events"][0]["region"] == "top left"  # the sample's white box starts in the top left corner
    assert answer["summary"].startswith("3 scenes over 6.0 s: red (0.0-2.0 s)")
    assert api.stats()["last_requests"][-1]["structured"] == "json_schema"


def test_a_schema_stated_in_the_prompt_is_answered_in_a_fence(post, kit, api):
    text = f"Index this video. Answer with JSON matching this JSON Schema:\n{json.dumps(INDEX)}"
    answer = content(post("openai", kit.body("openai", kit.part("openai"), text=text)))
    assert answer.startswith("```json\n") and answer.endswith("\n```")
    validate(json.loads(answer[8:-4]), INDEX)
    assert api.stats()["last_requests"][-1]["structured"] == "prompt"


def test_packed_videos_are_answered_one_item_each(post, kit):
    wrapper = {"type": "object", "required": ["videos"], "properties": {"videos": {"type": "array", "items": {
        "type": "object", "required": ["video", "chapters"], "properties": {
            "video": {"type": "integer"}, "chapters": {"type": "array", "items": SPAN}}}}}}
    body = kit.body("gdc", kit.part("gdc"), kit.part("gdc", spec=kit.short))
    answer = json.loads(content(post("gdc", {**body, "response_format": schema_format(wrapper)})))
    assert [v["video"] for v in answer["videos"]] == [1, 2]
    assert [len(v["chapters"]) for v in answer["videos"]] == [3, 2]
    assert answer["videos"][1]["chapters"][-1]["end_s"] == kit.short.seconds


def test_badjson_breaks_the_schema_once(post, kit, api):
    api.config.script.extend(["badjson"])
    body = {**kit.body("openai"), "response_format": schema_format(INDEX)}
    broken = json.loads(content(post("openai", body)))
    assert "summary" not in broken and "chapters" in broken  # valid JSON, the first required property missing
    validate(json.loads(content(post("openai", body))), INDEX)
    assert api.stats()["faults"] == {"badjson": 1}


def test_text_only_structured_request_joins_the_spans_of_its_prompt(post):
    reduce = {"type": "object", "required": ["summary", "chapters"], "properties": {
        "summary": {"type": "string"}, "chapters": {"type": "array", "items": SPAN}}}
    segments = {"segments": [
        {"start_s": 0, "end_s": 5, "chapters": [{"start_s": 0, "end_s": 3, "title": "Red scene"},
                                                {"start_s": 3, "end_s": 5, "title": "Green scene"}]},
        {"start_s": 5, "end_s": 9, "chapters": [{"start_s": 5, "end_s": 7, "title": "Green scene"},
                                                {"start_s": 7, "end_s": 9, "title": "Blue scene"}]}]}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"Summarize.\n{json.dumps(segments)}"}],
            "response_format": schema_format(reduce)}
    answer = json.loads(content(post("openai", body)))
    assert [(c["start_s"], c["end_s"], c["title"]) for c in answer["chapters"]] == [
        (0, 3, "Red scene"), (3, 7, "Green scene"), (7, 9, "Blue scene")]


def test_text_only_plain_request_is_still_refused(post):
    resp = post("openai", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "no_video"


@pytest.mark.parametrize("response_format,param", [
    ({"type": "xml"}, "response_format"),
    ({"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}}, "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "ok"}}, "response_format.json_schema.schema"),
])
def test_malformed_response_format_is_a_400(post, kit, response_format, param):
    resp = post("openai", {**kit.body("openai"), "response_format": response_format})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_response_format" and resp.json()["error"]["param"] == param
