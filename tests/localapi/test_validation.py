"""Strict validation: each malformed request gets a 4xx with an OpenAI-style error that says what is wrong."""

from __future__ import annotations

import base64

import pytest

from localapi.samples import SampleSpec


def error_of(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error", error
    return error


@pytest.mark.parametrize(
    ("dialect", "rename", "code", "param", "says"),
    [
        ("openai", ("model", "model_id"), "use_model", "model_id", "use model"),
        ("trinity", ("model", "model_id"), "use_model", "model_id", "use model"),
        ("gdc", ("model_id", "model"), "use_model_id", "model", "use model_id"),
        ("openai", ("model", "name"), "missing_model", "model", "'model' is required"),
    ],
)
def test_model_field_per_dialect(post, kit, dialect, rename, code, param, says):
    body = kit.body(dialect, kit.part(dialect, spec=kit.short))
    body[rename[1]] = body.pop(rename[0])
    error = error_of(post(dialect, body), 400, code)
    assert error["param"] == param and says in error["message"]


def test_unknown_and_text_only_models(post, kit):
    body = kit.body("openai", kit.part("openai", spec=kit.short))
    body["model"] = "acme/vision-9000"
    error = error_of(post("openai", body), 404, "model_not_found")
    assert "acme/vision-9000" in error["message"] and "gemini-2.5-flash" in error["message"]
    body["model"] = "localapi/text-only"
    error = error_of(post("openai", body), 400, "model_lacks_video")
    assert "lacks 'video' in inputModalities" in error["message"] and error["param"] == "model"


@pytest.mark.parametrize(
    ("dialect", "part_changes", "code", "param", "says"),
    [
        ("openai", {"mime": "video/x-flv"}, "unsupported_mime", "messages[0].content[1].video_url.url",
         "allowed: video/mp4, video/mpeg, video/mov, video/webm"),
        ("trinity", {"mime": "video/mov"}, "unsupported_mime", "messages[0].content[1].file_url", "video/quicktime"),
        ("gdc", {"mime": "video/mp4", "container": "wmv"}, "unsupported_mime",
         "messages[0].content[0].input_video.data",
         "format 'wmv' needs the data URL to start with 'data:video/wmv;base64,'"),
        ("gdc", {"mime": "video/quicktime", "container": "mov"}, "unsupported_mime",
         "messages[0].content[0].input_video.data", "allowed: video/mov"),
    ],
)
def test_mime_rules(post, kit, dialect, part_changes, code, param, says):
    error = error_of(post(dialect, kit.body(dialect, kit.part(dialect, spec=kit.short, **part_changes))), 400, code)
    assert error["param"] == param and says in error["message"], error


def test_gdc_format_must_be_listed(post, kit):
    part = kit.part("gdc", spec=kit.short)
    part["input_video"]["format"] = "mkv"
    error = error_of(post("gdc", kit.body("gdc", part)), 400, "unsupported_format")
    assert "avi, flv, mov, mpeg, mpg, mp4, webm, wmv, 3gpp; got 'mkv'" in error["message"]


def test_gdc_at_most_ten_videos(post, kit):
    error = error_of(post("gdc", kit.body("gdc", *[kit.part("gdc", spec=kit.short)] * 11)), 400, "too_many_videos")
    assert "at most 10 videos" in error["message"] and "holds 11" in error["message"]


def test_gdc_single_video_before_text(post, kit):
    body = kit.body("gdc", kit.part("gdc", spec=kit.short))
    body["messages"][0]["content"].reverse()
    error = error_of(post("gdc", body), 400, "video_after_text")
    assert error["param"] == "messages[0].content[1]" and "before the text" in error["message"]
    two = kit.body("gdc", kit.part("gdc", spec=kit.short), kit.part("gdc", spec=kit.short))
    two["messages"][0]["content"].reverse()  # the rule concerns a single video only
    assert post("gdc", two).status_code == 200


def test_gdc_duration_limits_depend_on_audio(post, kit):
    with_audio = SampleSpec(seconds=101, scene_seconds=50, width=160, height=120, fps=1, audio=True)
    error = error_of(post("gdc", kit.body("gdc", kit.part("gdc", spec=with_audio))), 400, "video_too_long")
    assert "lasts 101.00 s" in error["message"] and "at most 100 s with audio" in error["message"]
    silent = SampleSpec(seconds=110, scene_seconds=50, width=160, height=120, fps=1, audio=False)
    assert post("gdc", kit.body("gdc", kit.part("gdc", spec=silent))).status_code == 200
    too_long = SampleSpec(seconds=121, scene_seconds=50, width=160, height=120, fps=1, audio=False)
    error = error_of(post("gdc", kit.body("gdc", kit.part("gdc", spec=too_long))), 400, "video_too_long")
    assert "lasts 121.00 s" in error["message"] and "120 s without" in error["message"]


def test_gdc_duration_limit_is_configurable(api, post, kit):
    api.config.gdc_max_seconds_audio = 5.0
    error = error_of(post("gdc", kit.body("gdc", kit.part("gdc"))), 400, "video_too_long")
    assert "lasts 6.00 s" in error["message"] and "at most 5 s with audio" in error["message"]


def test_bad_base64_is_named_not_echoed(post, kit):
    payload = base64.b64encode(kit.sample("mp4", kit.short)).decode()[:-3] + "!!!"
    error = error_of(post("openai", kit.body("openai", kit.part("openai", url=f"data:video/mp4;base64,{payload}"))),
                     400, "invalid_base64")
    assert "video 1 (inline video/mp4)" in error["message"] and "invalid base64" in error["message"]
    assert payload[:40] not in str(error)


def test_raw_base64_without_data_url_prefix(post, kit):
    raw = base64.b64encode(kit.sample("mp4", kit.short)).decode()
    part = {"type": "input_video", "input_video": {"data": raw, "format": "mp4"}}
    error = error_of(post("gdc", kit.body("gdc", part)), 400, "invalid_data_url")
    assert "must be a data URL 'data:video/<type>;base64,<data>'" in error["message"]
    assert raw[:40] not in error["message"]


def test_text_disguised_as_mp4_is_undecodable(post, kit):
    fake = b"just some notes, not a video\n" * 40
    part = kit.part("trinity", url=kit.data_url(fake), name="notes.mp4")
    error = error_of(post("trinity", kit.body("trinity", part)), 400, "undecodable_video")
    assert error["message"].startswith("video 1 (notes.mp4) could not be decoded: Invalid data found")
    assert error["param"] == "messages[0].content[1].file_url"


def test_trinity_file_over_max_file_bytes(api, post, kit):
    api.config.max_file_bytes = 1000
    resp = post("trinity", kit.body("trinity", kit.part("trinity", spec=kit.short)))
    assert resp.status_code == 413
    error = resp.json()["error"]
    size = len(kit.sample("mp4", kit.short))
    assert error["code"] == "file_too_large"
    assert f"is {size} bytes" in error["message"] and "up to 1000 bytes" in error["message"]


@pytest.mark.parametrize(
    ("dialect", "part", "code", "says"),
    [
        ("openai", {"type": "image_url", "image_url": {"url": "https://x/y.png"}}, "unsupported_part_type",
         "allowed types: text, video_url"),
        ("trinity", {"type": "video_url", "video_url": {"url": "https://x/y.mp4"}}, "unsupported_part_type",
         "allowed types: text, file ('video_url' parts belong to the openai or gdc dialect)"),
        ("gdc", {"type": "file", "file_name": "a.mp4", "file_url": "s3://b/a.mp4"}, "unsupported_part_type",
         "allowed types: text, input_video, video_url"),
        ("trinity", {"type": "file", "file_url": "https://x/y.mp4"}, "missing_file_name", "file_name must be"),
        ("openai", {"type": "video_url", "video_url": "https://x/y.mp4"}, "invalid_part",
         "video_url must be an object"),
        ("openai", {"type": "video_url", "video_url": {"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"}},
         "unfetchable_url", "cannot fetch YouTube links (https://www.youtube.com)"),
        ("openai", {"type": "video_url", "video_url": {"url": "ftp://files.example.com/a.mp4"}}, "invalid_url",
         "or an http(s) URL; got ftp://files.example.com"),
        ("gdc", {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}, "not_a_bucket_object",
         "send inline video as an input_video part"),
    ],
)
def test_part_shapes(post, kit, dialect, part, code, says):
    error = error_of(post(dialect, kit.body(dialect, part)), 400, code)
    assert says in error["message"], error
    assert "dQw4w9WgXcQ" not in error["message"]


def test_unfetchable_url_names_host_only(post, kit, file_server):
    url = f"{file_server.url}/private/missing.mp4?X-Amz-Signature=deadbeef"
    error = error_of(post("openai", kit.body("openai", kit.part("openai", url=url))), 400, "unfetchable_url")
    assert error["message"] == f"video 1 could not be fetched from {file_server.url}: answered HTTP 404"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ([], "invalid_body", None),
        ({"model": "gpt-4o", "messages": []}, "invalid_messages", "messages"),
        ({"model": "gpt-4o", "messages": [{"role": "tool", "content": "x"}]}, "invalid_role", "messages[0].role"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}, "invalid_content", "messages[0].content"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, "invalid_text",
         "messages[0].content[0].text"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "no video here"}]}, "no_video", "messages"),
        ({"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "x"}]}, "unsupported_stream",
         "stream"),
    ],
)
def test_common_body_rules(post, body, code, param):
    assert error_of(post("openai", body), 400, code)["param"] == param


def test_body_must_be_json(client, kit):
    resp = client.post(kit.paths["openai"], content=b"{not json", headers={"Content-Type": "application/json"})
    assert error_of(resp, 400, "invalid_json")["message"].startswith("the body is not valid JSON")


def test_auth(api, kit):
    import httpx

    body = kit.body("openai", kit.part("openai", spec=kit.short))
    url = api.url + kit.paths["openai"]
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}):
        resp = httpx.post(url, json=body, headers=headers, trust_env=False)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "missing_api_key"
    assert httpx.post(url, json=body, headers={"Authorization": "Bearer anything"}, trust_env=False).status_code == 200
    api.config.api_key = "sk-local-expected"
    resp = httpx.post(url, json=body, headers={"Authorization": "Bearer sk-wrong"}, trust_env=False)
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    assert "sk-wrong" not in resp.text
    ok = httpx.post(url, json=body, headers={"Authorization": "Bearer sk-local-expected"}, trust_env=False)
    assert ok.status_code == 200


def test_unknown_route(client):
    resp = client.post("/v2/chat/completions", json={})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
