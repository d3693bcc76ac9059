"""localapi's Luma-style generation endpoints (the Luma generation task API) over HTTP: validation, clock-driven
states, failures, clips."""

from __future__ import annotations

import base64
import io
import re

import pytest

from localapi import LocalAPI, LocalAPIConfig
from localapi.luma import LumaSettings, fails
from tasks.media.probe import probe
from tests.images import png, png_data_url

PATH = "/luma/generations"


@pytest.fixture
def luma(api):
    """The module's server with default luma settings and a clock the test moves."""
    now = [1_800_000_000.0]
    api.luma.settings = LumaSettings(step_s=10)
    api.luma.clock = lambda: now[0]
    api.luma.advance = lambda s: now.__setitem__(0, now[0] + s)
    yield api.luma
    api.luma.clock = __import__("time").time


def test_submit_answers_like_the_seed(client, luma):
    body = {"user_prompt": "cat dance", "expand_prompt": True, "image_url": "https://example.com/reference.png",
            "image_end_url": png_data_url(), "notify_hook": "https://example.com/hook", "loop": True,
            "aspect_ratio": "9:16"}
    r = client.post(PATH, json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"id", "state", "created_at", "request"}
    assert answer["state"] == "pending" and answer["request"] == {"prompt": "cat dance", "aspect_ratio": "9:16"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", answer["created_at"])
    default = client.post(PATH, json={"user_prompt": "美人鱼"}).json()
    assert default["request"] == {"prompt": "美人鱼", "aspect_ratio": "16:9"}
    bare_base64 = base64.b64encode(png()).decode()
    assert client.post(PATH, json={"user_prompt": "x", "image_url": bare_base64}).status_code == 200


@pytest.mark.parametrize("body,param,code", [
    ({}, "user_prompt", "missing_user_prompt"),
    ({"user_prompt": ""}, "user_prompt", "invalid_user_prompt"),
    ({"user_prompt": 42}, "user_prompt", "invalid_user_prompt"),
    ({"user_prompt": "x", "aspect_ratio": "21:9"}, "aspect_ratio", "invalid_aspect_ratio"),
    ({"user_prompt": "x", "aspect_ratio": 969}, "aspect_ratio", "invalid_aspect_ratio"),
    ({"user_prompt": "x", "expand_prompt": "yes"}, "expand_prompt", "invalid_type"),
    ({"user_prompt": "x", "loop": 1}, "loop", "invalid_type"),
    ({"user_prompt": "x", "image_url": "not base64 at all!"}, "image_url", "invalid_image"),
    ({"user_prompt": "x", "image_url": "ftp://example.com/a.png"}, "image_url", "invalid_image"),
    ({"user_prompt": "x", "image_end_url": base64.b64encode(b"plain text, no image").decode()}, "image_end_url",
     "not_an_image"),
    ({"user_prompt": "x", "image_url": "data:text/plain;base64,aGVsbG8="}, "image_url", "invalid_image"),
    ({"user_prompt": "x", "notify_hook": "hook"}, "notify_hook", "invalid_notify_hook"),
    ({"user_prompt": "x", "model": "luma"}, "model", "unexpected_field"),
])
def test_invalid_requests_are_refused_naming_the_field(client, luma, body, param, code):
    r = client.post(PATH, json=body)
    assert r.status_code == 400
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == (param, code)
    assert luma.stats()["submitted"] == 0 and luma.stats()["refused"] == 1


def test_body_must_be_a_json_object_and_a_bearer_token_is_required(client, luma, api):
    assert client.post(PATH, content=b"{not json").json()["error"]["code"] == "invalid_json"
    assert client.post(PATH, json=["cat"]).status_code == 400
    anonymous = client.post(PATH, json={"user_prompt": "x"}, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert client.get(f"{PATH}/nope").status_code == 404


def test_states_advance_with_time_and_a_real_clip_is_served(client, luma):
    task = client.post(PATH, json={"user_prompt": "a lighthouse", "aspect_ratio": "9:16"}).json()
    seen = []
    for _ in range(5):
        answer = client.get(f"{PATH}/{task['id']}").json()
        seen.append(answer["state"])
        luma.advance(10)
    assert seen == ["pending", "queued", "dreaming", "processing", "completed"]
    assert answer["failure_reason"] is None and answer["assets"]["video"] == answer["video"]["url"]
    clip = client.get(answer["video"]["url"])
    assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
    data = clip.content
    facts = probe(io.BytesIO(data), "clip.mp4")
    assert (facts.width, facts.height) == (108, 192) and 1.5 <= facts.duration_s <= 2.5 and not facts.has_audio
    stats = luma.stats()
    assert stats["by_prompt"] == {"a lighthouse": 1} and stats["polls"] == 5 and stats["downloads"] == 1


def test_a_video_is_served_only_once_completed(client, luma):
    task = client.post(PATH, json={"user_prompt": "soon"}).json()
    assert client.get(f"/luma/files/{task['id']}.mp4").status_code == 404
    luma.configure({"step_s": 0})  # every task, also those created before, is now finished
    assert client.get(f"{PATH}/{task['id']}").json()["state"] == "completed"
    assert client.get(f"/luma/files/{task['id']}.mp4").headers["content-type"] == "video/mp4"


def test_a_configured_share_fails_with_a_reason(client, luma):
    luma.configure({"failure_rate": 0.5, "seed": 7, "step_s": 0, "failure_reason": "moderation: refused"})
    prompts = [f"prompt {i}" for i in range(20)]
    states = {}
    for p in prompts:
        task = client.post(PATH, json={"user_prompt": p}).json()
        states[p] = client.get(f"{PATH}/{task['id']}").json()
    expected = {p for p in prompts if fails(7, p, 1, 0.5)}
    assert 0 < len(expected) < 20
    assert {p for p, a in states.items() if a["state"] == "failed"} == expected
    failed = states[sorted(expected)[0]]
    assert failed["failure_reason"] == "moderation: refused" and failed["video"] is None
    assert client.get(f"/luma/files/{failed['id']}.mp4").status_code == 404


def test_states_sequence_is_configurable(client, luma):
    luma.configure({"states": ["pending", "upscaling"], "step_s": 5})
    task = client.post(PATH, json={"user_prompt": "odd states"}).json()
    luma.advance(5)
    assert client.get(f"{PATH}/{task['id']}").json()["state"] == "upscaling"
    r = client.post("/_localapi/luma/config", json={"states": ["completed"]})
    assert r.status_code == 400 and "in-progress" in r.json()["error"]["message"]
    assert client.post("/_localapi/luma/config", json={"speed": 2}).status_code == 400
    assert client.post("/_localapi/luma/config", json={"failure_rate": 0.25}).json()["luma"]["failure_rate"] == 0.25


def test_stats_over_http_and_reset(client, luma):
    client.post(PATH, json={"user_prompt": "twice"})
    client.post(PATH, json={"user_prompt": "twice"})
    stats = client.get("/_localapi/luma/stats").json()
    assert stats["submitted"] == 2 and stats["by_prompt"] == {"twice": 2} and len(stats["tasks"]) == 2
    client.get(f"{PATH}/{stats['tasks'][0]['id']}")
    assert [t["polls"] for t in luma.stats()["tasks"]] == [1, 0]
    client.post("/_localapi/reset")
    assert client.get("/_localapi/luma/stats").json()["submitted"] == 0


def test_faults_and_rate_limits_apply_to_generation_requests(client, luma, api):
    api.config.script = ["503"]
    api.config.rpm = 1
    assert client.post(PATH, json={"user_prompt": "x"}).status_code == 503
    assert luma.stats()["faults"] == {"503": 1} and luma.stats()["submitted"] == 0
    limited = client.get(f"{PATH}/any")  # polls count in the same window
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_image_urls_on_the_storage_endpoint_are_fetched_and_checked(s3):
    import httpx

    fs, endpoint = s3
    fs.mkdir("refs")
    fs.pipe_file("refs/first.png", png())
    fs.pipe_file("refs/notes.png", b"not an image")
    with LocalAPI(LocalAPIConfig(storage_endpoint=endpoint)) as api, \
            httpx.Client(base_url=api.url, headers={"Authorization": "Bearer t"}, trust_env=False) as c:
        ok = c.post(PATH, json={"user_prompt": "x", "image_url": fs.sign("refs/first.png")})
        assert ok.status_code == 200, ok.text
        bad = c.post(PATH, json={"user_prompt": "x", "image_url": fs.sign("refs/notes.png")})
        assert bad.json()["error"]["code"] == "not_an_image"
        missing = c.post(PATH, json={"user_prompt": "x", "image_end_url": fs.sign("refs/missing.png")})
        assert missing.json()["error"]["code"] == "unfetchable_image"
        assert "Signature" not in missing.json()["error"]["message"]
