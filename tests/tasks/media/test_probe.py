import io

import pytest

from tasks.dialects.registry import mime_for
from tasks.errors import MediaError
from tasks.media.probe import probe
from tasks.media.tokens import sampled_seconds, text_tokens, video_tokens
from tests.conftest import video


@pytest.mark.parametrize("container", ["mp4", "mov", "webm", "avi", "flv", "mpeg", "mpg", "wmv", "3gp"])
@pytest.mark.parametrize("audio", [True, False])
def test_probe_every_seed_container(container, audio):
    p = probe(io.BytesIO(video(container, seconds=3, audio=audio)), f"x.{container}")
    assert abs(p.duration_s - 3) < 0.2
    assert p.has_audio is audio
    assert (p.width, p.height) == (160, 120)
    assert p.video_codec


def test_text_file_named_mp4_and_truncated_file_are_media_errors():
    with pytest.raises(MediaError, match="bad.mp4"):
        probe(io.BytesIO(b"this is not a video\n" * 10), "bad.mp4")
    data = video("mp4", seconds=3)
    with pytest.raises(MediaError, match="cut.mp4"):
        probe(io.BytesIO(data[: len(data) // 2]), "cut.mp4")


def test_gemini_token_rules():
    p = probe(io.BytesIO(video("mp4", seconds=4, audio=True)), "a.mp4")
    assert sampled_seconds(p.duration_s, p.fps) == 4
    assert video_tokens(p) == 4 * (258 + 7 + 32)
    q = probe(io.BytesIO(video("mp4", seconds=4, audio=False)), "b.mp4")
    assert video_tokens(q, frame_tokens=66) == 4 * (66 + 7)
    assert sampled_seconds(4.5, 10) == 5 and sampled_seconds(0.2, 10) == 1
    assert text_tokens("abcd", "abcde", "") == 1 + 2


def test_mime_names_per_dialect():
    assert mime_for("openai", "mov") == "video/mov" and mime_for("gdc", "mov") == "video/mov"
    assert mime_for("trinity", "mov") == "video/quicktime"
    assert mime_for("gdc", "3gp") == "video/3gpp" and mime_for("gdc", "flv") == "video/x-flv"
