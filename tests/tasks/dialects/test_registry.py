import subprocess
import sys
import types
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.call.responses import parse_completion
from tasks.dialects import gdc, openai, registry, trinity
from tasks.dialects.base import Dialect, VideoRef
from tasks.dialects.registry import DIALECTS, NAMES, UnknownDialectError, build_payload, dialect, endpoint, mime_for
from tasks.errors import ConfigError, MalformedResponseError


def test_openai_matches_the_lunos_video_input_url_example():
    # Lunos video input: text first, then {"type":"video_url","video_url":{"url":...}}
    body = build_payload("openai", "google/gemini-2.5-flash", "", "Jelaskan apa yang terjadi pada video ini.",
                         [VideoRef("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "mp4", "v.mp4")])
    assert body == {"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Jelaskan apa yang terjadi pada video ini."},
        {"type": "video_url", "video_url": {"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"}}]}]}


def test_gdc_inline_matches_gemini_on_gdc_with_video_before_text():
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


def test_trinity_matches_trinity_video_input_file_part_text_first():
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


# -- the Dialect records and the registry ---------------------------------------------------------------------------


def test_an_unknown_dialect_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown dialect 'klingon'; .*'openai', 'gdc' or 'trinity'$"):
        dialect("klingon")
    with pytest.raises(UnknownDialectError):
        build_payload("klingon", "m", "", "x", [])
    with pytest.raises(ValueError, match="'openai', 'gdc' or 'trinity'"):
        mime_for("klingon", "mp4")


@pytest.mark.parametrize("module", [openai, gdc, trinity])
def test_each_dialect_is_one_module_registered_under_its_name(module):
    d = module.DIALECT
    assert DIALECTS[d.name] is d and dialect(d.name) is d
    assert d.media_limits is module.MEDIA_LIMITS and d.mime_types is module.MIME_TYPES
    assert d.video_part is getattr(module, f"{d.name}_part")


def test_limits_mime_and_format_names_come_from_the_dialects_module():
    assert dialect("trinity").media_limits["max_bytes_per_video"] == 70 * 1024 * 1024
    assert dialect("trinity").mime("MOV") == "video/quicktime" and dialect("trinity").mime("avi") == "video/x-msvideo"
    assert dialect("gdc").media_limits["max_seconds_audio"] == 100 and dialect("gdc").media_limits[
        "max_videos_per_request"] == 10
    assert dialect("gdc").formats["3gp"] == "3gpp" and dialect("openai").formats == {}
    assert dialect("openai").mime("mpg") == "video/mpeg" and dialect("gdc").mime("mpg") == "video/mpg"
    assert dialect("openai").mime("mkv") == "video/mkv" and dialect("openai").mime("") == "video/mp4"
    assert [dialect(n).localapi_prefix for n in NAMES] == ["/v1", "", "/trinity/v1"]


def test_required_keys_are_named_when_missing():
    gdc_ = dialect("gdc")
    assert gdc_.missing({"project": "p", "location": ""}) == ["location"]
    with pytest.raises(ValueError, match=r"needs project and location \(they form the endpoint path\); "
                                         r"missing: project, location$"):
        gdc_.require({})
    gdc_.require({"project": "p", "location": "l"})
    dialect("openai").require({})  # nothing required


def test_the_dialect_records_import_without_pyav_or_tasks_config():
    code = ("import sys, tasks.dialects.registry; "
            "print(sorted(m for m in sys.modules if m == 'av' or m.startswith('tasks.config')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.stdout.strip() == "[]"


def test_a_fourth_dialect_is_one_module_in_the_registry(monkeypatch):
    from tasks.config.run import ProviderConfig

    module = types.ModuleType("tasks.dialects.fourth")
    module.DIALECT = Dialect("fourth", "model_name", lambda v: {"type": "clip", "src": v.url}, video_first=False,
                             media_limits={"max_seconds_silent": 30, "mime_types": ["video/mp4"]},
                             mime_types={"mp4": "video/mp4"}, localapi_prefix=None, path="/v2/chat",
                             required=("project",))
    monkeypatch.setitem(sys.modules, "tasks.dialects.fourth", module)
    monkeypatch.setitem(DIALECTS, "fourth", registry._load("fourth"))
    p = ProviderConfig(dialect="fourth", base_url="https://f.test/", model="m", project="p")
    assert p.media.max_seconds_silent == 30 and p.media.mime_types == ["video/mp4"]
    assert p.endpoint() == "https://f.test/v2/chat" and mime_for("fourth", "mp4") == "video/mp4"
    assert build_payload("fourth", "m", "", "u", [VideoRef("https://h/x.mp4", "mp4", "x.mp4")])["model_name"] == "m"
    with pytest.raises(ValidationError, match="missing: project"):
        ProviderConfig(dialect="fourth", base_url="https://f.test/", model="m")
    monkeypatch.setitem(sys.modules, "tasks.dialects.fifth", types.ModuleType("tasks.dialects.fifth"))
    with pytest.raises(ImportError, match=r"fifth\.py must define DIALECT"):
        registry._load("fifth")
