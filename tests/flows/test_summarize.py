"""The summarize flow end to end on real servers: moto S3, localapi over HTTP, Prefect's test harness."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

import pytest

from flows.summarize import summarize
from tasks.config.load import load_config
from tasks.errors import ConfigError
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket, video
from tests.flows.conftest import API_KEY, all_logs, artifacts, prefect_api

pytestmark = pytest.mark.usefixtures("prefect_harness")

VIDEOS = {
    "cam01/2026/11/21/lobby 08h00.mp4": video("mp4", seconds=4, audio=True),
    "cam01/2026/11/21/lobby 09h00.webm": video("webm", seconds=3, audio=False),
    "cam02/2026/11/22/gate#2+east 100%.mov": video("mov", seconds=5, audio=True),
}
JUNK = {"cam01/2026/11/21/notes.txt": b"not a video", "cam01/2026/11/21/zero.mp4": b""}


def run(config, **kw):
    return asyncio.run(summarize(config=str(config), **kw))


def ledger(config):
    return read_ledger(load_config(config).output)


@pytest.mark.parametrize("dialect,delivery", [
    ("openai", "inline"), ("openai", "presigned"),
    ("gdc", "inline"), ("gdc", "storage_uri"), ("gdc", "presigned"),
    ("trinity", "inline"), ("trinity", "presigned"),
])
def test_each_dialect_and_delivery_one_row_per_video(s3, localapi, make_config, dialect, delivery):
    fs, _ = s3
    seed_bucket(fs, "videos", {**VIDEOS, **JUNK})
    config = make_config(localapi, dialect, delivery)
    result = run(config)
    assert (result["ok"], result["error"]) == (3, 0)
    assert result["skipped_extension"] == 1 and result["skipped_empty"] == 1
    df = ledger(config)
    assert len(df) == 4 and df.request_key.is_unique  # the zero-byte object has its `skipped` row
    assert df[df.status == "skipped"].source_uri.tolist() == ["s3://videos/cam01/2026/11/21/zero.mp4"]
    df = df[df.status != "skipped"]
    stats = localapi.stats()
    assert stats["ok"] == 3 and stats["by_dialect"] == {dialect: 3}
    for key, data in VIDEOS.items():
        r = df[df.source_uri == f"s3://videos/{key}"].iloc[0]
        assert r.status == "ok" and r.dialect == dialect and r.delivery == delivery and r.attempts == 1
        assert r.source_size == len(data) and r.source_etag and r.segment_index == 0
        assert r.has_audio == (not key.endswith(".webm"))
        assert f"duration {r.video_duration_s:.2f}"[:-1] in r.output_text  # localapi states what it decoded
        # the estimate follows the token rules of Gemini on GDC video understanding exactly
        assert r.prompt_tokens == r.estimated_prompt_tokens
        assert r.total_tokens == r.prompt_tokens + r.completion_tokens
    # tokens recorded are the tokens localapi reported
    assert df.prompt_tokens.sum() == sum(t[2] for t in stats["timeline"] if t[1] == 200)
    kinds = {p.get("kind") for req in stats["last_requests"] for p in req["parts"] if p.get("kind")}
    assert kinds == ({"inline"} if delivery == "inline" else {"url"})
    if dialect == "trinity":
        mov = next(p for req in stats["last_requests"] for p in req["parts"] if p.get("file_name", "").endswith(".mov"))
        assert delivery != "inline" or mov["mime"] == "video/quicktime"


def test_second_run_makes_no_calls(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    config = make_config(localapi)
    assert run(config)["ok"] == 3
    before = localapi.stats()["requests"]
    second = run(config)
    assert (second["ok"], second["error"], second["skipped_already_done"]) == (0, 0, 3)
    assert localapi.stats()["requests"] == before
    df = ledger(config)
    assert len(df) == df.request_key.nunique() == 3


def test_changed_prompt_makes_new_keys(s3, localapi, make_config, tmp_path):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    config = make_config(localapi)
    run(config)
    text = config.read_text().replace("Summarize this video.", "List the people.")
    config.write_text(text)
    assert run(config)["ok"] == 3
    assert ledger(config).request_key.nunique() == 6


def test_429_and_5xx_survived_with_exact_attempts(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {"one.mp4": VIDEOS["cam01/2026/11/21/lobby 08h00.mp4"]})
    localapi.config.script.extend(["429", "503", "drop", "502html", "ok"])
    config = make_config(localapi, max_attempts=6)
    result = run(config)
    assert result["ok"] == 1
    r = ledger(config).iloc[0]
    assert r.attempts == 5 and r.status == "ok"
    assert localapi.stats()["by_status"].get("429") == 1 or localapi.stats()["by_status"].get(429) == 1


def test_fault_mix_across_a_batch_every_item_ok(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    localapi.config.script.extend(["500", "ok", "504", "malformed", "ok", "ok", "ok"])
    config = make_config(localapi)
    result = run(config)
    df = ledger(config)
    assert result["ok"] == 3 and (df.status == "ok").all()
    assert int((df.attempts - 1).sum()) == 3  # three faults, three extra attempts in all


def test_attempts_bounded_and_error_recorded(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", {"one.mp4": VIDEOS["cam01/2026/11/21/lobby 08h00.mp4"]})
    localapi.config.script.extend(["503"] * 3)
    config = make_config(localapi, max_attempts=3)
    result = run(config)
    r = ledger(config).iloc[0]
    assert result["error"] == 1 and r.status == "error" and r.error_type == "server"
    assert r.http_status == 503 and r.attempts == 3


def test_bad_request_not_retried_carries_provider_message(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    config = make_config(localapi, model="localapi/text-only")
    result = run(config)
    df = ledger(config)
    assert result["error"] == 3 and (df.attempts == 1).all() and (df.http_status == 400).all()
    assert (df.error_type == "bad_request").all()
    assert df.error_message.str.contains("video").all()


def test_bad_inputs_each_named_while_the_rest_completes(s3, localapi, make_config):
    fs, _ = s3
    good = VIDEOS["cam01/2026/11/21/lobby 08h00.mp4"]
    seed_bucket(fs, "videos", {
        "odd/space name.mp4": good, "odd/ünïcødé.mp4": good, "odd/hash#1.mp4": good, "odd/pct%20.mp4": good,
        "odd/plus+sign.mp4": good,
        "bad/truncated.mp4": good[: len(good) // 3], "bad/text.mp4": b"hello, I am a text file\n" * 20,
        "bad/zero.mp4": b"", "bad/clip.mkv": good, "bad/readme.md": b"# hi",
    })
    for delivery in ("inline", "presigned"):
        config = make_config(localapi, delivery=delivery, name=f"{delivery}.yaml", ledger=delivery)
        result = run(config)
        df = ledger(config)
        assert (result["ok"], result["error"]) == (5, 2), delivery
        assert result["skipped_empty"] == 1 and result["skipped_extension"] == 2
        errors = df[df.status == "error"].set_index("source_uri")
        assert set(errors.index) == {"s3://videos/bad/truncated.mp4", "s3://videos/bad/text.mp4"}
        for uri, r in errors.iterrows():
            assert r.error_type == "media" and uri in r.error_message and r.attempts == 0
        assert set(df[df.status == "ok"].source_uri) == {f"s3://videos/odd/{n}" for n in (
            "space name.mp4", "ünïcødé.mp4", "hash#1.mp4", "pct%20.mp4", "plus+sign.mp4")}


def test_missing_credential_fails_before_any_call(s3, localapi, make_config, monkeypatch):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    config = make_config(localapi)
    monkeypatch.delenv("VB_TEST_KEY")
    with pytest.raises(ConfigError, match="VB_TEST_KEY"):
        run(config)
    assert localapi.stats()["requests"] == 0


def test_wrong_key_is_an_auth_error_row(s3, localapi, make_config, monkeypatch):
    fs, _ = s3
    seed_bucket(fs, "videos", {"one.mp4": VIDEOS["cam01/2026/11/21/lobby 08h00.mp4"]})
    config = make_config(localapi)
    monkeypatch.setenv("VB_TEST_KEY", "sk-wrong")
    run(config)
    r = ledger(config).iloc[0]
    assert r.error_type == "auth" and r.http_status == 401 and r.attempts == 1


def test_unreachable_endpoint_every_item_recorded(s3, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = make_config(base_url=f"http://127.0.0.1:{port}/v1", max_attempts=2)
    result = run(config)
    df = ledger(config)
    assert result["error"] == 3 and len(df) == 3
    assert (df.error_type == "transport").all() and (df.attempts == 2).all()


def test_since_until_and_limit(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    config = make_config(localapi)
    assert run(config, since="2999-01-01")["ok"] == 0
    assert run(config, until="2000-01-01")["ok"] == 0
    assert run(config, limit=2)["ok"] == 2
    assert run(config)["ok"] == 1


def test_dry_run_sends_and_writes_nothing(s3, localapi, make_config, tmp_path):
    fs, _ = s3
    seed_bucket(fs, "videos", {**VIDEOS, "bad/text.mp4": b"text" * 50})
    config = make_config(localapi)
    result = run(config, dry_run=True)
    assert localapi.stats()["requests"] == 0 and not (tmp_path / "ledger").exists()
    assert len(result["planned"]) == 4
    est = [p["estimated_prompt_tokens"] for p in result["planned"] if not p["error"]]
    assert len(est) == 3 and result["estimated_prompt_tokens"] == sum(est) > 0
    assert [p for p in result["planned"] if p["error"]][0]["source_uri"] == "s3://videos/bad/text.mp4"


def test_no_secret_signature_or_payload_at_rest(s3, localapi, make_config, tmp_path, caplog):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    run_ids = []
    for delivery in ("inline", "presigned"):
        result = run(make_config(localapi, delivery=delivery, name=f"{delivery}.yaml", ledger=f"ledger/{delivery}"))
        assert result["ok"] == 3
        run_ids.append(result["run_id"])
    forbidden = [API_KEY, "X-Amz-Signature", "Signature=", "AWSAccessKeyId", "data:video", "base64,",
                 base64.b64encode(VIDEOS["cam01/2026/11/21/lobby 08h00.mp4"][:300]).decode()[:40]]
    df = ledger(make_config(localapi, name="read.yaml"))
    text = df.astype(str).to_csv()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "ledger").rglob("*.parquet"))

    async def flush_logs():
        from prefect.logging.handlers import APILogHandler

        await APILogHandler.aflush()

    asyncio.run(flush_logs())
    logs = " ".join(entry["message"] for entry in all_logs())
    arts = " ".join(str(a["data"]) + str(a["description"]) for a in artifacts())
    params = " ".join(str(prefect_api("GET", f"/flow_runs/{i}")["parameters"]) for i in run_ids)
    # every log record of this process but the S3 server's own access log (moto's werkzeug, as a real
    # object store would, logs the presigned GETs it serves)
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug"))
    assert "ok" in arts and "batch done" in logs
    for needle in forbidden:
        for where, blob in (("parquet", text), ("logs", logs), ("artifacts", arts), ("parameters", params),
                            ("captured logs", ours)):
            assert needle not in blob, f"{needle!r} found in {where}"
        assert needle.encode() not in raw


def test_summary_artifact(s3, localapi, make_config):
    fs, _ = s3
    seed_bucket(fs, "videos", VIDEOS)
    run(make_config(localapi))
    art = artifacts("summarize-test-run")[0]
    table = json.loads(art["data"])[0]
    assert (table["ok"], table["error"], table["job"]) == (3, 0, "test-run") and table["total_tokens"] > 0


@pytest.mark.parametrize("dialect", ["openai", "trinity"])
def test_public_url_delivery_from_a_local_folder(tmp_path, localapi, make_config, dialect):
    """A plain-path source served over http: the URL is built from public_base_url and the quoted path."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path / "site"
    (root / "cam 1").mkdir(parents=True)
    (root / "cam 1" / "clip#1+ü.mp4").write_bytes(VIDEOS["cam01/2026/11/21/lobby 08h00.mp4"])
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = make_config(localapi, dialect, "public_url",
                             public_base_url=f"http://127.0.0.1:{server.server_address[1]}/")
        text = config.read_text().replace("url: s3://videos/", f"url: {root}")
        config.write_text(text)
        result = run(config)
    finally:
        server.shutdown()
    assert result["ok"] == 1, ledger(config).error_message.tolist()
    part = localapi.stats()["last_requests"][-1]["parts"]
    assert any(p.get("kind") == "url" for p in part)
