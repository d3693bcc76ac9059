import pytest

from tasks.call.responses import parse_completion
from tasks.dialects.base import VideoRef
from tasks.dialects.registry import build_payload, endpoint
from tasks.errors import MalformedResponseError


def test_openai_matches_seed_000_url_example():
    # seed 000 (Lunos): text first, then {"type":"video_url","video_url":{"url":...}}
    body = build_payload("openai", "google/gemini-2.5-flash", "", "Jelaskan apa yang terjadi pada video ini.",
                         [VideoRef("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "mp4", "v.mp4")])
    assert body == {"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Jelaskan apa yang terjadi pada video ini."},
        {"type": "video_url", "video_url": {"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"}}]}]}


def test_gdc_inline_matches_seed_001_with_video_before_text():
    ref = VideoRef("data:video/wmv;base64,AAAA", "wmv", "a.wmv")
    body = build_payload("gdc", "MODEL_ID", "", "Describe", [ref])
    assert "model" not in body and body["model_id"] == "MODEL_ID"
    content = body["messages"][0]["content"]
    assert content[0] == {"type": "input_video", "input_video": {"data": "data:video/wmv;base64,AAAA", "format": "wmv"}}
    assert content[1] == {"type": "text", "text": "Describe"}


def test_gdc_url_part_and_3gp_format():
    body = build_payload("gdc", "m", "", "x", [VideoRef("s3://bucket/a.3gp", "3gp", "a.3gp")])
    assert body["messages"][0]["content"][0] == {"type": "video_url", "video_url": {"url": "s3://bucket/a.3gp"}}
    inline = build_payload("gdc", "m", "", "x", [VideoRef("data:video/3gpp;base64,AA", "3gp", "a.3gp")])
    assert inline["messages"][0]["content"][0]["input_video"]["format"] == "3gpp"


def test_trinity_matches_seed_002_file_part_text_first():
    body = build_payload("trinity", "gpt-4o", "", "请概括这段视频的主要情节。",
                         [VideoRef("https://example.com/clip.mp4", "mp4", "clip.mp4")])
    assert body == {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "请概括这段视频的主要情节。"},
        {"type": "file", "file_name": "clip.mp4", "file_url": "https://example.com/clip.mp4"}]}]}


def test_system_prompt_params_and_extra_body():
    body = build_payload("trinity", "m", "sys", "u", [VideoRef("https://h/x.mp4", "mp4", "x.mp4")],
                         {"temperature": 0.1}, {"extra_content": {"google": {"fps": 2}}})
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert body["temperature"] == 0.1 and body["extra_content"] == {"google": {"fps": 2}}


def test_endpoints():
    assert endpoint("openai", "https://api.lunos.tech/v1/") == "https://api.lunos.tech/v1/chat/completions"
    assert endpoint("gdc", "https://E:443", "P", "L") == "https://E:443/v1/projects/P/locations/L/chat/completions"


def test_parse_completion_and_malformed():
    c = parse_completion({"id": "x", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
    assert (c.text, c.prompt_tokens, c.total_tokens, c.finish_reason) == ("hi", 3, 4, "stop")
    with pytest.raises(MalformedResponseError):
        parse_completion({"choices": []})
    with pytest.raises(MalformedResponseError):
        parse_completion(["not", "a", "dict"])
