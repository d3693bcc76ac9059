"""Stats: counts, request keys, request summaries without secrets; the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import localapi
from localapi.server import main


def test_keys_count_ok_answers_per_request_key(api, post, kit):
    body = kit.body("openai", kit.part("openai", spec=kit.short))
    api.config.script.extend(["ok", "ok", "500", "malformed"])
    for key in ("k1", "k1", "k2", "k2", "k2"):
        post("openai", body, headers={"X-Request-Key": key})
    stats = api.stats()
    assert stats["keys"] == {"k1": 2, "k2": 1}
    assert stats["ok"] == 3 and stats["requests"] == 5
    assert stats["by_status"] == {"200": 4, "500": 1} and stats["by_dialect"] == {"openai": 5}
    assert [row[1] for row in stats["timeline"]] == [200, 200, 500, 200, 200]
    assert all(row[2] == kit.video_tokens(2, False) + kit.text_tokens("Describe what happens in this video.")
               for row in stats["timeline"])


def test_stats_endpoint_matches_snapshot(api, client, post, kit):
    post("trinity", kit.body("trinity", kit.part("trinity", spec=kit.short)))
    assert client.get("/_localapi/stats").json() == api.stats()


def test_last_requests_summaries_hold_no_secrets(api, kit, file_server, post):
    api.config.api_key = secret = "sk-very-secret-token"
    file_server.files["/v/clip.mp4"] = kit.sample("mp4", kit.short)
    signed = f"{file_server.url}/v/clip.mp4?X-Amz-Signature=f00dfeed&X-Amz-Credential=AKIAEXAMPLE"
    inline = kit.part("trinity", spec=kit.short, name="a.mp4")
    b64 = inline["file_url"].split(",", 1)[1]
    body = kit.body("trinity", inline, kit.part("trinity", url=signed, name="b.mp4"))
    assert post("trinity", body, headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    bad = kit.body("openai", kit.part("openai", url="data:video/mp4;base64," + b64[:-4] + "****"))
    assert post("openai", bad, headers={"Authorization": f"Bearer {secret}"}).status_code == 400
    stats = api.stats()
    dumped = json.dumps(stats)
    for needle in (secret, b64[:32], b64[-32:], "f00dfeed", "AKIAEXAMPLE", "X-Amz"):
        assert needle not in dumped
    size = len(kit.sample("mp4", kit.short))
    first, second = stats["last_requests"]
    assert first == {
        "dialect": "trinity", "path": "/trinity/v1/chat/completions", "model": "gpt-4o", "status": 200,
        "parts": [{"type": "text"},
                  {"type": "file", "kind": "inline", "mime": "video/mp4", "file_name": "a.mp4", "size": size},
                  {"type": "file", "kind": "url", "url": file_server.url, "file_name": "b.mp4", "size": size}],
    }
    assert second["status"] == 400
    assert second["parts"] == [{"type": "text"}, {"type": "video_url", "kind": "inline", "mime": "video/mp4"}]


def test_last_requests_keeps_fifty(api, client, kit):
    for _ in range(55):
        client.post(kit.paths["gdc"], json={"model": "x"})
    stats = api.stats()
    assert stats["requests"] == 55 and len(stats["last_requests"]) == 50
    assert stats["by_status"] == {"400": 55}


def test_reset_clears_script_and_stats(api, post, kit):
    api.config.script.extend(["500", "500"])
    post("openai", kit.body("openai", kit.part("openai", spec=kit.short)))
    api.reset()
    assert api.config.script == []
    assert api.stats() == {"requests": 0, "by_status": {}, "by_dialect": {}, "ok": 0, "in_flight": 0,
                           "in_flight_max": 0, "dropped": 0, "faults": {}, "keys": {}, "timeline": [],
                           "admitted": [], "last_requests": []}


def test_config_validation_says_what_to_do():
    with pytest.raises(ValueError, match="unknown fault kind 'teapot'; allowed: 429"):
        localapi.LocalAPIConfig(faults={"teapot": 0.1})
    with pytest.raises(ValueError, match="latency must be"):
        localapi.LocalAPIConfig(latency=(2, 1))
    with pytest.raises(ValueError, match="keep the sum <= 1"):
        localapi.LocalAPIConfig(faults={"500": 0.7, "drop": 0.5})
    with pytest.raises(ValueError, match="rpm must be a positive integer"):
        localapi.LocalAPIConfig(rpm=0)


def test_cli_serves_and_says_it_is_offline(kit):
    root = Path(localapi.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "LOCALAPI_TEST_KEY": "sk-cli"}
    proc = subprocess.Popen([sys.executable, "-m", "localapi", "--port", "0", "--rpm", "5", "--fault", "500=0.0",
                             "--api-key-env", "LOCALAPI_TEST_KEY", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root)
    try:
        banner = proc.stdout.readline()
        assert "OFFLINE provider" in banner
        url = banner.split("serving ", 1)[1].split()[0]
        assert httpx.get(f"{url}/v1/models", trust_env=False).status_code == 200
        body = kit.body("openai", kit.part("openai", spec=kit.short))
        resp = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-cli"},
                          trust_env=False, timeout=30)
        assert resp.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "sk-cli" not in out + err


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--fault", "teapot=0.1"])
    assert exit_info.value.code == 2 and "unknown fault kind 'teapot'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--api-key-env", "LOCALAPI_SURELY_UNSET_VARIABLE"])
