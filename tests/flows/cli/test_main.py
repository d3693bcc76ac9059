"""The vidbatch command as a user runs it: a subprocess against the test Prefect server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
import yaml

from tests.conftest import video

pytestmark = pytest.mark.usefixtures("prefect_harness")


def vidbatch(*args, cwd=None, timeout=240):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


@pytest.fixture
def local_run(tmp_path):
    """A local folder of videos and a config using the embedded localapi (base_url: localapi)."""
    bucket = tmp_path / "bucket" / "cam01" / "2026" / "11" / "21"
    bucket.mkdir(parents=True)
    (bucket / "a.mp4").write_bytes(video("mp4", seconds=3))
    (bucket / "b.webm").write_bytes(video("webm", seconds=2, audio=False))
    cfg = {"job": "cli", "source": {"url": str(tmp_path / "bucket")}, "provider": {"profile": "localapi-gdc"},
           "prompt": {"user": "Summarize."}, "output": {"url": str(tmp_path / "ledger")}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, bucket


def test_run_ok_then_rerun_sends_nothing(local_run, tmp_path):
    config, _ = local_run
    first = vidbatch("run", config)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "summary:" in first.stdout and "ok                       2" in first.stdout
    assert "2/2 done (ok 2, error 0)" in first.stderr  # the progress line
    df = pd.read_parquet(tmp_path / "ledger")
    assert list(df.status) == ["ok", "ok"] and set(df.dialect) == {"gdc"}
    second = vidbatch("run", config, "--quiet")
    assert second.returncode == 0 and "skipped_already_done     2" in second.stdout
    assert len(pd.read_parquet(tmp_path / "ledger")) == 2


def test_exit_1_when_an_item_ends_in_error(local_run, tmp_path):
    config, bucket = local_run
    (bucket / "fake.mp4").write_text("not a video")
    done = vidbatch("run", config)
    assert done.returncode == 1
    df = pd.read_parquet(tmp_path / "ledger")
    bad = df[df.status == "error"].iloc[0]
    assert bad.source_uri.endswith("fake.mp4") and bad.error_type == "media"


def test_dry_run_prints_plan_and_total(local_run, tmp_path):
    config, _ = local_run
    done = vidbatch("run", config, "--dry-run")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dry run: nothing is sent" in done.stdout and "total estimated prompt tokens" in done.stdout
    assert "a.mp4" in done.stdout and not (tmp_path / "ledger").exists()


def test_config_errors_exit_2_naming_file_and_key(local_run, tmp_path):
    config, _ = local_run
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("job: cli", "job: cli\njobs: typo"))
    done = vidbatch("run", bad)
    assert done.returncode == 2 and str(bad) in done.stderr and "jobs: unknown key" in done.stderr
    done = vidbatch("run", config, "--since", "last tuesday")
    assert done.returncode == 2 and "--since 'last tuesday': not a date" in done.stderr


def test_missing_source_exits_2(local_run, tmp_path):
    config, _ = local_run
    cfg = yaml.safe_load(config.read_text())
    cfg["source"]["url"] = str(tmp_path / "nowhere")
    config.write_text(yaml.safe_dump(cfg))
    done = vidbatch("run", config)
    assert done.returncode == 2 and "no such directory or bucket" in done.stderr


def test_localapi_command_serves_offline_provider():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "localapi", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(100):
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert any("video" in m["inputModalities"] for m in models["data"])
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert "OFFLINE" in out


def test_without_a_prefect_api_a_run_starts_its_own_server_in_a_child_process_and_stops_it(local_run, tmp_path):
    config, _ = local_run
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # a fresh home: the server builds its database first
    script = ("import sys, runpy; sys.argv = ['vidbatch', 'run', sys.argv[1], '--quiet']\n"
              "from flows.cli.main import main\n"
              "code = main(sys.argv[1:])\n"
              "print('server modules in the run:',\n"
              "      sorted(m for m in sys.modules if m.startswith('prefect.server.api')))\n"
              "import os; print('api after:', os.environ.get('PREFECT_API_URL'))\n"
              "from pathlib import Path\n"
              "kids = [d.name for d in Path('/proc').iterdir() if d.name.isdigit() and (d / 'stat').exists()\n"
              "        and (d / 'stat').read_text().rsplit(')', 1)[1].split()[1] == str(os.getpid())]\n"
              "print('children left:', kids)\n"
              "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script, str(config)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok                       2" in done.stdout
    assert "server modules in the run: []" in done.stdout  # the server lives in the child only
    assert "api after: None" in done.stdout
    assert "children left: []" in done.stdout  # the server was stopped and reaped
    assert "Error logging to API" not in done.stderr  # ...after the run's last logs reached it
    assert (tmp_path / "prefect-home" / "prefect.db").exists()  # ...after it recorded the run


def test_the_temporary_server_goes_when_its_command_is_killed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    script = ("import os, sys, time\n"
              "from flows.prefect.api import prefect_api\n"
              "with prefect_api() as url:\n"
              "    print(url, flush=True)\n"
              "    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    url = proc.stdout.readline().strip()
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    proc.kill()  # SIGKILL: no finally, no atexit
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/health", timeout=2)
        except httpx.TransportError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the temporary server at {url} outlived its command")


def test_budget_dry_run_bill_then_exit_4_when_the_budget_stops_the_run(local_run, tmp_path):
    config, bucket = local_run
    for i in range(4):
        (bucket / f"more{i}.mp4").write_bytes(video("mp4", seconds=3))
    cfg = yaml.safe_load(config.read_text())
    cfg["provider"]["prices"] = {"currency": "XTS", "per_million": {"text": 1, "video": 1, "audio": 2, "output": 4}}
    cfg["prompt"]["params"] = {"max_tokens": 50}
    config.write_text(yaml.safe_dump(cfg))
    bill = vidbatch("run", config, "--dry-run", "--budget", "0.003", "--quiet")
    assert bill.returncode == 0, bill.stderr[-2000:]
    assert "estimated bill (XTS" in bill.stdout and "total for 6 requests" in bill.stdout
    assert "budget: 0.003000 XTS left allows" in bill.stdout
    stopped = vidbatch("run", config, "--budget", "0.003", "--quiet")
    assert stopped.returncode == 4, stopped.stderr[-2000:]
    assert "requests not sent (error_type budget)" in stopped.stdout
    df = pd.read_parquet(tmp_path / "ledger")
    assert df[df.status == "ok"].cost.sum() <= 0.003 and (df.error_type == "budget").sum() > 0
    rest = vidbatch("run", config, "--quiet")
    assert rest.returncode == 0 and "left undone" not in rest.stdout
    tiny = vidbatch("run", config, "--force", "--budget", "0.00001", "--quiet")
    assert tiny.returncode == 2 and "is below a single request's reservation" in tiny.stderr


def _one_line_exit_2(done, *names):
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines[0].startswith("vidbatch: ") and all(str(n) in lines[0] for n in names), lines


def test_an_output_that_cannot_be_written_exits_2_on_one_line_before_anything_is_sent(local_run, tmp_path):
    config, _ = local_run
    cfg = yaml.safe_load(config.read_text())
    (tmp_path / "a-file").write_text("not a directory")
    for out in [tmp_path / "a-file"] + (["/sys/kernel/vidbatch-ledger"] if os.path.isdir("/sys/kernel") else []):
        cfg["output"]["url"] = str(out)
        config.write_text(yaml.safe_dump(cfg))
        _one_line_exit_2(vidbatch("run", config), out, "not writable")
    assert (tmp_path / "a-file").read_text() == "not a directory"


def test_a_directory_or_a_binary_file_as_the_config_exits_2_on_one_line(tmp_path):
    binary = tmp_path / "clip.yaml"
    binary.write_bytes(video("mp4", seconds=1))
    for path, what in ((tmp_path, "is a directory"), (binary, "not a text file")):
        for command in ("run", "index"):
            _one_line_exit_2(vidbatch(command, path), path, what)
