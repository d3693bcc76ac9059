"""Valid requests in each dialect: the answer states the true facts of the video and usage follows the Gemini rules."""

from __future__ import annotations

import math

import pytest

from localapi.samples import SampleSpec


def assert_answer(resp, kit, *, model: str, label: str, texts: tuple[str, ...], spec: SampleSpec | None = None) -> str:
    """The answer names the sample's true duration, size and scene changes; usage follows the formula."""
    spec = spec or kit.spec
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-localapi-")
    assert answer["model"] == model
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    text = choice["message"]["content"]
    changes = ", ".join(f"{t:.1f} s" for t in spec.scene_changes)
    assert text.startswith("[localapi offline provider] video 1 (")
    assert f"video 1 ({label}): duration {spec.seconds:.2f} s, {spec.width}x{spec.height}" in text
    assert f"{len(spec.scene_changes) + 1} scenes; scene changes at {changes}." in text
    assert ("no audio" not in text) == spec.audio
    seconds = math.ceil(spec.seconds)
    prompt = kit.video_tokens(seconds, spec.audio) + kit.text_tokens(*texts)
    audio = 32 * seconds if spec.audio else 0
    text_part = kit.text_tokens(*texts)
    assert answer["usage"] == {"prompt_tokens": prompt, "completion_tokens": math.ceil(len(text) / 4),
                               "total_tokens": prompt + math.ceil(len(text) / 4),
                               # by modality, as OpenAI-style gateways report it
                               "prompt_tokens_details": {"text_tokens": text_part, "audio_tokens": audio,
                                                         "video_tokens": prompt - text_part - audio,
                                                         "cached_tokens": 0},
                               "completion_tokens_details": {"reasoning_tokens": 0}}
    return text


@pytest.mark.parametrize("container", ["mp4", "mpeg", "mov", "webm"])
def test_openai_inline_data_url(post, kit, container):
    body = kit.body("openai", kit.part("openai", container=container), text="Apa yang terlihat dalam video ini?")
    resp = post("openai", body)
    text = assert_answer(resp, kit, model="google/gemini-2.5-flash", label=f"inline video/{container}",
                         texts=("Apa yang terlihat dalam video ini?",))
    assert "audio" in text


@pytest.mark.parametrize("fmt", ["avi", "flv", "mov", "mpeg", "mpg", "mp4", "webm", "wmv", "3gpp"])
def test_gdc_inline_input_video_every_format(post, kit, fmt):
    resp = post("gdc", kit.body("gdc", kit.part("gdc", container=fmt)))
    mime = {"avi": "video/avi", "flv": "video/x-flv", "mov": "video/mov", "3gpp": "video/3gpp"}.get(fmt, f"video/{fmt}")
    assert_answer(resp, kit, model="gemini-2.5-flash", label=f"inline {mime}",
                  texts=("Describe what happens in this video.",))


@pytest.mark.parametrize("container", ["mp4", "mov"])
def test_trinity_inline_file_part_with_extra_content(post, kit, container):
    part = kit.part("trinity", container=container, name=f"clip.{container}")
    part["extra_content"] = {"google": {"fps": 1}}
    body = kit.body("trinity", part, text="这段视频里发生了什么?")
    body["extra_content"] = {"google": {"thinking": False}}
    assert_answer(post("trinity", body), kit, model="gpt-4o", label=f"clip.{container}",
                  texts=("这段视频里发生了什么?",))


def test_silent_video_and_frame_tokens_profile(api, post, kit):
    spec = SampleSpec(seconds=3, scene_seconds=1, width=160, height=120, fps=10, audio=False)
    api.config.frame_tokens = 66
    resp = post("openai", kit.body("openai", kit.part("openai", spec=spec), text="x"))
    text = resp.json()["choices"][0]["message"]["content"]
    assert "no audio, 3 scenes; scene changes at 1.0 s, 2.0 s." in text
    assert resp.json()["usage"]["prompt_tokens"] == 3 * (66 + 7) + 1


def test_several_videos_and_every_text_counted(post, kit):
    short = kit.short
    body = kit.body("openai", kit.part("openai"), kit.part("openai", container="webm", spec=short), text="Compare.")
    body["messages"][:0] = [{"role": "system", "content": "You index lectures."}]
    body["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "Noted."}]})
    resp = post("openai", body)
    assert resp.status_code == 200, resp.text
    text = resp.json()["choices"][0]["message"]["content"]
    assert "video 1 (inline video/mp4): duration 6.00 s" in text
    assert ("video 2 (inline video/webm): duration 2.00 s, 160x120, video vp8, no audio, 2 scenes; "
            "scene changes at 1.0 s.") in text
    expected = (kit.video_tokens(6, True) + kit.video_tokens(2, False)
                + kit.text_tokens("You index lectures.", "Compare.", "Noted."))
    assert resp.json()["usage"]["prompt_tokens"] == expected


def test_openai_and_trinity_fetch_http_urls(post, kit, file_server):
    file_server.files["/media/clip.mp4"] = kit.sample("mp4")
    url = f"{file_server.url}/media/clip.mp4?token=abc"
    assert_answer(post("openai", kit.body("openai", kit.part("openai", url=url))), kit,
                  model="google/gemini-2.5-flash", label=file_server.url,
                  texts=("Describe what happens in this video.",))
    assert_answer(post("trinity", kit.body("trinity", kit.part("trinity", url=url, name="lecture.mp4"))), kit,
                  model="gpt-4o", label="lecture.mp4", texts=("Describe what happens in this video.",))


def test_gdc_s3_uri_and_presigned_url(api, post, kit, bucket):
    fs, moto_endpoint = bucket
    api.config.storage_endpoint = moto_endpoint
    resp = post("gdc", kit.body("gdc", kit.part("gdc", url="s3://videos/clip.mp4")))
    assert_answer(resp, kit, model="gemini-2.5-flash", label="s3://videos/clip.mp4",
                  texts=("Describe what happens in this video.",))
    signed = fs.sign("videos/clip.mp4")
    assert signed.startswith(moto_endpoint) and "?" in signed
    resp = post("gdc", kit.body("gdc", kit.part("gdc", url=signed)))
    assert_answer(resp, kit, model="gemini-2.5-flash", label=moto_endpoint,
                  texts=("Describe what happens in this video.",))
    assert signed.split("?", 1)[1] not in str(api.stats())


def test_gdc_bucket_errors(api, post, kit, bucket):
    _, moto_endpoint = bucket
    api.config.storage_endpoint = moto_endpoint
    missing = post("gdc", kit.body("gdc", kit.part("gdc", url="s3://videos/missing.mp4"))).json()["error"]
    assert missing["code"] == "unfetchable_url" and "s3://videos/missing.mp4" in missing["message"]
    other = post("gdc", kit.body("gdc", kit.part("gdc", url="https://cdn.example.com/clip.mp4?sig=1"))).json()["error"]
    assert other["code"] == "not_a_bucket_object"
    assert "GDC accepts only objects in a storage bucket" in other["message"]
    assert "https://cdn.example.com" in other["message"] and "sig=1" not in other["message"]
    assert moto_endpoint in other["message"]


def test_models_lists_input_modalities(client):
    models = {m["id"]: m["inputModalities"] for m in client.get("/v1/models").json()["data"]}
    assert models["google/gemini-2.5-flash"] == ["text", "video"]
    assert models["localapi/text-only"] == ["text"]
    assert {"gemini-2.5-flash", "localapi/video-1", "gpt-4o"} <= set(models)

