import json
from datetime import UTC, datetime

import pytest
import yaml

from tasks.call.structured import check_answer
from tasks.config.load import PROJECT_ROOT, load_index_config
from tasks.errors import ConfigError
from tasks.index.entries import merge_entries, per_video_schema
from tasks.index.indexer import Indexer

LECTURES = PROJECT_ROOT / "configs" / "lectures.yaml"
SURVEILLANCE = PROJECT_ROOT / "configs" / "surveillance.yaml"
AT = datetime(2026, 11, 21, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def lectures():
    return Indexer(load_index_config(LECTURES))


@pytest.fixture(scope="module")
def cameras():
    return Indexer(load_index_config(SURVEILLANCE))


def chapter(start, end, title, **extra):
    return {"start_s": start, "end_s": end, "title": title, "summary": f"{title} text", "confidence": 0.8, **extra}


def segment_row(key, index, start, end, answer, duration=150.0, count=2, pack_index=0):
    return {"request_key": key, "source_uri": "s3://b/lec.mp4", "source_key": "src", "segment_index": index,
            "segment_start_s": start, "segment_end_s": end, "video_duration_s": duration, "segment_count": count,
            "pack_index": pack_index, "output_text": json.dumps(answer), "provider": "p", "model": "m",
            "has_audio": True, "created_at": AT, "status": "ok"}


def lecture_answer(chapters, terms=()):
    return {"summary": "s", "chapters": chapters, "topics": [], "key_terms": list(terms), "on_screen_text": []}


def test_segment_times_become_absolute_and_a_chapter_across_the_boundary_is_one_entry(lectures):
    rows = [segment_row("k0", 0, 0.0, 75.0, lecture_answer([chapter(0, 40, "Intro"), chapter(40, 75, "Limits")])),
            segment_row("k1", 1, 75.0, 150.0, lecture_answer(
                [chapter(0, 20, "limits "), chapter(20, 80, "Series", slide=3)],  # 80 s runs past the segment's end
                [{"term": "epsilon", "definition": "small", "start_s": 5, "end_s": 6, "confidence": 1}]))]
    entries = lectures.segment_entries(rows)
    chapters = [(e["start_s"], e["end_s"], e["label"], e["request_keys"]) for e in entries if e["kind"] == "chapter"]
    assert chapters == [(0.0, 40.0, "Intro", ["k0"]), (40.0, 95.0, "Limits", ["k0", "k1"]),
                        (95.0, 150.0, "Series", ["k1"])]
    series = next(e for e in entries if e["label"] == "Series")
    assert json.loads(series["attributes"]) == {"slide": 3} and series["confidence"] == 0.8
    term = next(e for e in entries if e["kind"] == "key_term")
    assert (term["start_s"], term["end_s"], term["text"], term["segment_index"]) == (80.0, 81.0, "small", 1)


def test_entries_outside_their_segment_are_dropped_or_clipped(lectures):
    rows = [segment_row("k0", 0, 100.0, 150.0, lecture_answer([chapter(-5, 10, "A"), chapter(60, 70, "Ghost")]))]
    entries = lectures.segment_entries(rows)
    assert [(e["start_s"], e["end_s"], e["label"]) for e in entries] == [(100.0, 110.0, "A")]


def test_one_request_never_merges_with_itself_but_overlapping_segments_do():
    base = {"source_key": "s", "stage": "extract", "kind": "event", "text": None, "confidence": None,
            "attributes": "{}"}
    two_people = [{**base, "start_s": 0.0, "end_s": 5.0, "label": "person", "request_keys": ["a"]},
                  {**base, "start_s": 2.0, "end_s": 6.0, "label": "person", "request_keys": ["a"]},
                  {**base, "start_s": 5.5, "end_s": 9.0, "label": "Person", "request_keys": ["b"]},
                  {**base, "start_s": 30.0, "end_s": 31.0, "label": "person", "request_keys": ["c"]}]
    merged = merge_entries(two_people, gap_s=1.0)
    assert [(e["start_s"], e["end_s"], e["request_keys"]) for e in merged] == [
        (0.0, 5.0, ["a"]), (2.0, 9.0, ["a", "b"]), (30.0, 31.0, ["c"])]


def test_check_names_spans_that_end_before_they_start(lectures):
    bad = json.dumps(lecture_answer([chapter(10, 4, "Backwards")]))
    assert lectures.check(bad, [object()]) == "$.chapters[0]: end_s (4) is before start_s (10)"
    assert lectures.check(json.dumps(lecture_answer([chapter(0, 4, "Fine")])), [object()]) is None
    assert "'chapters' is a required property" in lectures.check('{"summary": "s"}', [object()])


def test_packed_answers_number_every_video_once_and_map_to_it(cameras):
    assert cameras.packed and cameras.schema == per_video_schema(cameras.spec.json_schema)
    event = {"type": "person", "start_s": 1, "end_s": 2, "description": "walks", "region": "centre",
             "confidence": 0.7}
    answer = {"videos": [{"video": 2, "events": [event]}, {"video": 1, "events": []}]}
    assert cameras.check(json.dumps(answer), [object(), object()]) is None
    assert "must take each of 1 to 3 once; got [2, 1]" in cameras.check(json.dumps(answer), [object()] * 3)
    rows = [segment_row(f"k{i}", 0, 0.0, 4.0, answer, duration=4.0, count=1, pack_index=i) for i in range(2)]
    entries = [e for r in rows for e in cameras.segment_entries([r])]
    assert [(e["request_keys"], e["kind"], e["label"], e["text"]) for e in entries] == [
        (["k1"], "event", "person", "walks")]
    assert json.loads(entries[0]["attributes"]) == {"region": "centre"}


def test_reduce_sees_absolute_times_and_its_chapters_are_clipped(lectures):
    rows = [segment_row("k0", 0, 0.0, 75.0, lecture_answer([chapter(0, 75, "A")])),
            segment_row("k1", 1, 75.0, 150.0, lecture_answer([chapter(0, 75, "B")]))]
    user, params = lectures.reduce_prompt(rows)
    context = json.loads(user.split("Segment results:\n", 1)[1])
    assert [c["start_s"] for s in context["segments"] for c in s["chapters"]] == [0.0, 75.0]
    assert context["duration_s"] == 150.0 and params["response_format"]["json_schema"]["name"] == "video_summary"
    answer = {"summary": "Two parts.", "chapters": [
        {"start_s": 0, "end_s": 75, "title": "A", "summary": "a"}, {"start_s": 75, "end_s": 999, "title": "B",
                                                                     "summary": "b"}]}
    reduce_row = {**rows[0], "request_key": "r", "output_text": json.dumps(answer)}
    assert check_answer(lectures.spec.summary.json_schema, reduce_row["output_text"])[1] is None
    entries = lectures.reduce_entries(reduce_row)
    assert [(e["kind"], e["start_s"], e["end_s"], e["label"]) for e in entries] == [
        ("summary", 0.0, 150.0, "lec.mp4"), ("chapter", 0.0, 75.0, "A"), ("chapter", 75.0, 150.0, "B")]
    assert {e["stage"] for e in entries} == {"reduce"}
    assert lectures.reduce_key("src", ["k1", "k0"]) == lectures.reduce_key("src", ["k0", "k1"])


def test_index_configs_are_checked_before_anything_runs(tmp_path):
    raw = yaml.safe_load(LECTURES.read_text())
    raw["index"]["entries"]["slides"] = {"kind": "slide"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError,
                       match=r"index: .*entries.slides: json_schema needs a property 'slides' of type array"):
        load_index_config(bad)
    raw = yaml.safe_load(LECTURES.read_text())
    raw["index"]["entries"]["chapters"]["label"] = "heading"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"entries.chapters.label: the items of 'chapters' have no property "
                                          r"'heading'"):
        load_index_config(bad)
    raw["index"]["json_schema"] = {"type": "object", "properties": {"chapters": {"type": "arrayish"}}}
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="not a valid JSON schema"):
        load_index_config(bad)


def test_output_holds_the_ledger_and_the_entries(lectures):
    assert lectures.run_config.output.url == "demo-output/index/lectures/ledger"
    assert lectures.entries_output.url == "demo-output/index/lectures/index"
    assert lectures.run_config.prompt.params["response_format"]["json_schema"]["schema"] == lectures.spec.json_schema
