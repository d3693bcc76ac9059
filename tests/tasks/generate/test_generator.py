"""Generation without Prefect: prompt lists, the plan, answers folded into records, and a run on a mock transport."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tasks.call.auth import Credentials
from tasks.call.client import ProviderClient
from tasks.config.generate import GenerateConfig
from tasks.errors import AuthError, ConfigError
from tasks.generate.generator import (
    GenerateTotals,
    Generator,
    Work,
    observe,
    open_generation_client,
    plan_work,
    video_url_of,
)
from tasks.generate.prompts import ImageSender, load_prompts
from tasks.generate.table import Generation, GenerationsTable, Recorder, read_generations
from tests.conftest import seed_bucket, video
from tests.images import png, png_data_url

KEY = "sk-luma-SECRET-4242"
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
ROWS = [
    {"user_prompt": "cat dance", "expand_prompt": True, "loop": True, "aspect_ratio": "16:9"},
    {"user_prompt": "a van at a loading dock", "aspect_ratio": "4:3", "notify_hook": "https://hooks.test/h?token=abc"},
    {"user_prompt": "美人鱼"},
]


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("LUMA_KEY", KEY)


def config(tmp_path, prompt_list, **over) -> GenerateConfig:
    raw = {"job": "unit", "prompts": {"url": str(prompt_list)},
           "provider": {"base_url": "http://luma.test", "api_key_env": "LUMA_KEY", "max_attempts": 3,
                        "backoff_initial_s": 1, "backoff_max_s": 4, "limits": {"concurrency": 2}},
           "poll": {"interval_s": 2, "backoff": 2, "max_interval_s": 5, "deadline_s": 100},
           "output": {"url": str(tmp_path / "out"), "flush_seconds": 1000}}
    for section, values in over.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return GenerateConfig.model_validate(raw)


def write_list(tmp_path, rows, fmt="yaml", name="prompts"):
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "yaml":
        path.write_text(yaml.safe_dump(rows, allow_unicode=True))
    elif fmt == "csv":
        cols = ["user_prompt", "expand_prompt", "image_url", "image_end_url", "loop", "aspect_ratio", "notify_hook"]
        lines = [",".join(cols)] + [",".join(str(r.get(c, "")).lower() if isinstance(r.get(c), bool) else
                                              str(r.get(c, "")) for c in cols) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist([{**{"expand_prompt": None, "loop": None, "aspect_ratio": None,
                                                 "notify_hook": None}, **r} for r in rows]), path)
    return path


# -- prompt lists ------------------------------------------------------------------------------------------------


def test_csv_parquet_and_yaml_give_the_same_prompts_and_keys(tmp_path):
    keys = {}
    for fmt in ("yaml", "csv", "parquet"):
        prompts = load_prompts(config(tmp_path, write_list(tmp_path, ROWS, fmt)))
        keys[fmt] = [p.key for p in prompts]
        assert [p.row for p in prompts] == [1, 2, 3]
        assert prompts[0].expand_prompt is True and prompts[0].loop is True and prompts[2].aspect_ratio is None
        assert prompts[1].recorded_fields()["notify_hook"] == "https://hooks.test/h"  # no token kept
    assert keys["yaml"] == keys["csv"] == keys["parquet"] and len(set(keys["yaml"])) == 3


def test_yaml_base60_ratios_plain_texts_defaults_and_repeated_rows(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("prompts:\n  - user_prompt: wide\n    aspect_ratio: 16:9\n  - tall shot\n  - tall shot\n")
    cfg = config(tmp_path, path, prompts={"defaults": {"aspect_ratio": "9:16", "loop": False}})
    wide, tall, again = load_prompts(cfg)
    assert (wide.aspect_ratio, tall.aspect_ratio, tall.loop) == ("16:9", "9:16", False)
    assert tall.key != again.key  # two identical rows ask for two clips
    other = load_prompts(config(tmp_path, path, provider={"name": "elsewhere"}))
    assert {p.key for p in other}.isdisjoint({wide.key, tall.key, again.key})


def test_every_bad_row_is_named_with_its_file_row_and_field_before_anything_is_sent(tmp_path):
    rows = [{"user_prompt": "ok"}, {"user_prompt": "wide", "aspect_ratio": "21:9"},
            {"user_prompt": "x", "loop": "maybe"}, {"aspect_ratio": "1:1"},
            {"user_prompt": "y", "image_url": "ftp://example.com/a.png", "notify_hook": "nope"}]
    path = write_list(tmp_path, rows, "csv")
    with pytest.raises(ConfigError) as e:
        load_prompts(config(tmp_path, path))
    text = str(e.value)
    assert "nothing was sent" in text
    assert f"{path.name}: row 2 (line 3): aspect_ratio: must be one of 1:1, 4:3, 3:4, 16:9, 9:16 (got '21:9')" in text
    assert "row 3 (line 4): loop:" in text and "row 4 (line 5): user_prompt: required field is missing" in text
    assert "row 5 (line 6): notify_hook: must be an http(s) URL" in text
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text("- user_prompt: a\n  aspect_ratio: 21:9\n- user_prompt: b\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"row 1: aspect_ratio: must be one of .*9:16 \(21:9 unquoted reads") as e:
        load_prompts(config(tmp_path, yaml_path))
    assert "row 2: colour: unknown field; allowed fields: user_prompt" in str(e.value)
    (tmp_path / "list.txt").write_text("cat")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        load_prompts(config(tmp_path, tmp_path / "list.txt"))


def test_images_urls_data_urls_and_objects(tmp_path, s3):
    fs, endpoint = s3
    seed_bucket(fs, "refs", {"lists/p.yaml": yaml.safe_dump([
        {"user_prompt": "a", "image_url": "first.png", "image_end_url": "https://cdn.test/end.png?sig=SECRET"},
        {"user_prompt": "b", "image_url": png_data_url()},
        {"user_prompt": "c", "image_url": "s3://refs/lists/first.png"}]).encode(), "lists/first.png": png()})
    cfg = config(tmp_path, "s3://refs/lists/p.yaml", prompts={"storage_options": {"endpoint_url": endpoint}})
    a, b, c = load_prompts(cfg)
    assert a.image_url.value == "s3://refs/lists/first.png" and a.image_url == c.image_url
    assert a.recorded_fields()["image_end_url"] == "https://cdn.test/end.png"
    assert b.recorded_fields()["image_url"].startswith("data:image/png;base64,<") and "iVBOR" not in str(
        b.recorded_fields())
    sender = ImageSender(cfg.images, cfg.prompts.storage_options)
    body = sender.body(a)
    assert body["image_url"].startswith(endpoint) and "Signature" in body["image_url"]
    assert body["image_end_url"] == "https://cdn.test/end.png?sig=SECRET" and set(body) == {
        "user_prompt", "image_url", "image_end_url"}
    inline = ImageSender(cfg.images.model_copy(update={"delivery": "inline"}), cfg.prompts.storage_options)
    assert inline.body(a)["image_url"] == "data:image/png;base64," + __import__("base64").b64encode(png()).decode()
    fs.rm("refs/lists/first.png")
    with pytest.raises(ConfigError, match=r"row 1: image_url: s3://refs/lists/first.png: no such object"):
        load_prompts(cfg)


def test_local_images_need_inline_delivery(tmp_path):
    (tmp_path / "ref.png").write_bytes(png())
    path = write_list(tmp_path, [{"user_prompt": "a", "image_url": "ref.png"}])
    with pytest.raises(ConfigError, match="presigned needs an object store"):
        load_prompts(config(tmp_path, path))
    (p,) = load_prompts(config(tmp_path, path, images={"delivery": "inline"}))
    assert p.image_url.value == f"file://{tmp_path}/ref.png"


# -- plan and answers --------------------------------------------------------------------------------------------


def test_plan_polls_open_tasks_submits_new_prompts_and_failed_ones_only_on_request(tmp_path):
    prompts = load_prompts(config(tmp_path, write_list(tmp_path, ROWS + [{"user_prompt": "d"},
                                                                         {"user_prompt": "e"}])))
    new, running, done, failed, refused = prompts
    latest = {
        running.key: Generation(running.key, task_id="t1", status="in_progress", state="dreaming"),
        done.key: Generation(done.key, task_id="t2", status="completed"),
        failed.key: Generation(failed.key, task_id="t3", status="failed", error_type="provider"),
        refused.key: Generation(refused.key, status="failed", error_type="server"),  # no task: provider was down
    }
    plan = plan_work(prompts, latest)
    assert [(w.prompt.key, w.submit) for w in plan.work] == [(new.key, True), (running.key, False), (refused.key, True)]
    assert (plan.completed, plan.failed) == (1, 1)
    again = plan_work(prompts, latest, retry_failed=True)
    assert {w.prompt.key for w in again.work if w.submit} == {new.key, failed.key, refused.key}
    limited = plan_work(prompts, latest, limit=1)
    assert limited.to_submit == 1 and limited.to_resume == 1 and limited.held == 1


def test_observe_records_every_new_state_once_and_warns_on_unknown_ones():
    g = Generation("k", task_id="t", status="in_progress", state="pending", submitted_at=T0,
                   states=({"state": "pending", "seen_at": T0},))
    g, warning = observe(g, {"state": "pending"}, T0 + timedelta(seconds=1))
    assert len(g.states) == 1 and warning is None
    g, warning = observe(g, {"state": "upscaling"}, T0 + timedelta(seconds=2))
    assert g.status == "in_progress" and "unknown state 'upscaling'" in warning
    done, _ = observe(g, {"state": "completed", "assets": {"video": "https://cdn.test/v.mp4?Signature=S"}},
                      T0 + timedelta(seconds=30))
    assert [s["state"] for s in done.states] == ["pending", "upscaling", "completed"]
    assert done.video_url == "https://cdn.test/v.mp4" and done.download_url.endswith("Signature=S")
    assert done.generation_s == 30.0 and done.status == "in_progress"  # completed once the clip is stored
    failed, _ = observe(g, {"state": "failed", "failure_reason": "flagged"}, T0)
    assert (failed.status, failed.failure_reason, failed.error_type) == ("failed", "flagged", "provider")
    assert video_url_of({"video": {"url": "https://a.test/1.mp4"}}) == "https://a.test/1.mp4"
    assert video_url_of({"video_url": "https://a.test/2.mp4"}) == "https://a.test/2.mp4"


# -- a run on a mock transport -----------------------------------------------------------------------------------


class FakeLuma:
    """A Luma-style API on httpx.MockTransport: answers scripted per prompt, a state list per poll, a CDN."""

    def __init__(self, states=("pending", "dreaming", "completed"), submit_script=None, poll_script=(),
                 cdn_script=()):
        self.states, self.poll_script = list(states), list(poll_script)
        self.submit_script = {k: list(v) for k, v in (submit_script or {}).items()}
        self.cdn_script = list(cdn_script)
        self.requests: list[httpx.Request] = []
        self.tasks: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "cdn.test":
            if self.cdn_script:
                return self.cdn_script.pop(0)
            return httpx.Response(200, content=video("mp4", seconds=1, audio=False))
        if request.method == "POST":
            prompt = json.loads(request.content)["user_prompt"]
            if self.submit_script.get(prompt):
                return self.submit_script[prompt].pop(0)
            task = f"task-{len(self.tasks) + 1}"
            self.tasks[task] = 0
            return httpx.Response(200, json={"id": task, "state": "pending", "created_at": "2026-11-21T08:00:00Z",
                                             "request": {"prompt": prompt}})
        if self.poll_script:
            return self.poll_script.pop(0)
        task = request.url.path.rsplit("/", 1)[-1]
        self.tasks[task] += 1
        state = self.states[min(self.tasks[task], len(self.states) - 1)]
        body = {"id": task, "state": state}
        if state == "completed":
            body["assets"] = {"video": f"https://cdn.test/{task}.mp4?Expires=1&Signature=CDN-SECRET"}
        if state == "failed":
            body["failure_reason"] = "content policy"
        return httpx.Response(200, json=body)


def run_generation(cfg, work, luma, table=None):
    """Run work through a Generator with a fake clock; return (generations, sleeps, table)."""
    sleeps, now = [], [0.0]

    async def sleep(s):
        sleeps.append(round(s, 3))
        now[0] += s

    table = table or GenerationsTable(cfg.output)

    async def main():
        p = cfg.provider
        async with ProviderClient(p, Credentials(p), transport=httpx.MockTransport(luma), sleep=sleep,
                                  clock=lambda: now[0]) as client:
            recorder = Recorder(table, "run-1", cfg.output.flush_seconds, clock=lambda: now[0])
            gen = Generator(cfg, client, cfg.provider.base_url, recorder, "run-1", sleep=sleep, clock=lambda: now[0],
                            now=lambda: T0 + timedelta(seconds=now[0]), totals=GenerateTotals())
            try:
                return await gen.track_all(work), gen
            finally:
                await recorder.close()

    (done, gen), = [asyncio.run(main())]
    return done, sleeps, table, gen


def test_the_generation_client_opens_on_its_connection_without_a_dialect(tmp_path):
    cfg = config(tmp_path, write_list(tmp_path, ROWS[:1]))
    luma = FakeLuma()

    async def main():
        async with open_generation_client(cfg, httpx.MockTransport(luma)) as (client, base_url):
            assert client.provider is cfg.provider and not hasattr(client.provider, "dialect")
            assert base_url == "http://luma.test" and client.url is None  # request only: no chat/completions URL
            assert client._http.timeout == httpx.Timeout(60, connect=10)
            answer = await client.request("POST", base_url + "/luma/generations", {"user_prompt": "cat dance"})
            with pytest.raises(TypeError, match="no chat/completions endpoint"):
                await client.send({"messages": []}, 1, "k")
            return answer.response.json()["id"]

    assert asyncio.run(main()) == "task-1"
    assert luma.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_a_localapi_generation_client_serves_the_luma_api_at_the_server_root(tmp_path):
    cfg = config(tmp_path, write_list(tmp_path, ROWS[:1]), provider={"base_url": "localapi", "api_key_env": None})

    async def main():
        async with open_generation_client(cfg) as (client, base_url):
            assert base_url.startswith("http://127.0.0.1:") and client.base_url == base_url
            answer = await client.request("POST", base_url + "/luma/generations", {"user_prompt": "cat dance"})
            return answer.response.json()["state"], client.credentials.header()["Authorization"]

    state, auth = asyncio.run(main())
    assert state == "pending" and auth.startswith("Bearer vb-local-")


def test_submit_retry_poll_backoff_download_and_record(tmp_path):
    cfg = config(tmp_path, write_list(tmp_path, ROWS[:1]))
    prompts = load_prompts(cfg)
    luma = FakeLuma(states=("pending", "queued", "dreaming", "processing", "completed"),
                    submit_script={"cat dance": [httpx.Response(429, headers={"Retry-After": "3"},
                                                                json={"error": "slow down"})]})
    (g,), sleeps, table, gen = run_generation(cfg, [Work(prompts[0], None, True)], luma)
    assert sleeps == [3.0, 2.0, 4.0, 5.0, 5.0]  # Retry-After, then polls every 2 s doubling up to 5 s
    assert g.status == "completed" and g.task_id == "task-1" and g.submit_attempts == 2
    assert [s["state"] for s in g.states] == ["pending", "queued", "dreaming", "processing", "completed"]
    clip = tmp_path / "out" / "videos" / f"cat-dance-{g.prompt_key[:12]}.mp4"
    assert clip.read_bytes() == video("mp4", seconds=1, audio=False) and g.output_bytes == clip.stat().st_size
    assert g.output_uri == f"file://{clip}" and g.video_url == "https://cdn.test/task-1.mp4"
    assert g.video_duration_s > 0 and g.polls == 4
    cdn = [r for r in luma.requests if r.url.host == "cdn.test"]
    assert len(cdn) == 1 and "authorization" not in cdn[0].headers  # the key never goes to another host
    api = [r for r in luma.requests if r.url.host == "luma.test"]
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in api)
    assert json.loads(api[0].content) == {"user_prompt": "cat dance", "expand_prompt": True, "loop": True,
                                          "aspect_ratio": "16:9"}
    latest = table.latest([g.prompt_key])[g.prompt_key]
    assert latest.status == "completed" and latest.revision == g.revision == 6
    files = list((tmp_path / "out" / "generations").rglob("*.parquet"))
    assert len(files) == 1 and files[0].parent.name == "date=2026-11-21"  # the run's files merged into one
    all_rows = read_generations(cfg.output, latest=False)
    assert list(all_rows.revision) == [1, 2, 3, 4, 5, 6] and gen.totals.as_dict()["completed"] == 1
    text = all_rows.astype(str).to_string()
    assert KEY not in text and "CDN-SECRET" not in text and "Signature" not in text


def test_deadline_leaves_tasks_in_progress_and_a_rerun_resumes_them(tmp_path):
    cfg = config(tmp_path, write_list(tmp_path, ROWS[:1]), poll={"deadline_s": 7})
    prompts = load_prompts(cfg)
    luma = FakeLuma(states=("pending",) * 10 + ("completed",))
    (g,), sleeps, table, _ = run_generation(cfg, [Work(prompts[0], None, True)], luma)
    assert g.status == "in_progress" and g.state == "pending" and g.polls == 3
    assert sleeps == [2.0, 4.0, 1.0]  # the last wait is cut at the deadline, then one last look
    assert table.latest([g.prompt_key])[g.prompt_key].status == "in_progress"
    plan = plan_work(prompts, table.latest(p.key for p in prompts))
    assert plan.to_submit == 0 and plan.to_resume == 1
    luma.states = ["completed"]
    (resumed,), sleeps, _, _ = run_generation(cfg, plan.work, luma, table)
    assert resumed.status == "completed" and sleeps == []  # a resumed task is polled at once
    assert sum(r.method == "POST" for r in luma.requests) == 1 and resumed.task_id == g.task_id
    assert resumed.revision > g.revision and resumed.polls == 4


def test_failures_are_recorded_with_their_reasons(tmp_path):
    cfg = config(tmp_path, write_list(tmp_path, ROWS))
    prompts = load_prompts(cfg)
    luma = FakeLuma(states=("pending", "failed"), submit_script={
        "cat dance": [httpx.Response(400, json={"error": {"message": "aspect ratio unsupported by this model"}})],
        "a van at a loading dock": [httpx.Response(503, json={"error": "busy"})] * 3})  # max_attempts 3
    work = [Work(p, None, True) for p in prompts]
    refused, down, failed = run_generation(cfg, work, luma)[0]
    assert (refused.status, refused.error_type, refused.http_status, refused.task_id) == (
        "failed", "bad_request", 400, None)
    assert "aspect ratio unsupported" in refused.failure_reason
    assert (down.status, down.error_type, down.task_id) == ("failed", "server", None)
    assert (failed.status, failed.error_type, failed.failure_reason) == ("failed", "provider", "content policy")
    assert [s["state"] for s in failed.states] == ["pending", "failed"]
    plan = plan_work(prompts, GenerationsTable(cfg.output).latest(p.key for p in prompts))
    assert [w.prompt.key for w in plan.work] == [down.prompt_key] and plan.failed == 2


def test_a_task_the_provider_forgot_fails_and_a_bad_download_is_tried_again(tmp_path):
    cfg = config(tmp_path, write_list(tmp_path, ROWS[:2]))
    prompts = load_prompts(cfg)
    luma = FakeLuma(states=("completed",), poll_script=[httpx.Response(404, json={"error": "no such task"})],
                    cdn_script=[httpx.Response(200, content=b"<html>not a video</html>")])
    lost = Generation(prompts[0].key, revision=3, task_id="gone", status="in_progress", state="dreaming")
    late = Generation(prompts[1].key, revision=2, task_id="task-9", status="in_progress", state="queued")
    luma.tasks["task-9"] = 0
    lost_done, late_done = run_generation(cfg, [Work(prompts[0], lost, False), Work(prompts[1], late, False)],
                                          luma)[0]
    assert (lost_done.status, lost_done.error_type, lost_done.revision) == ("failed", "lost", 4)
    assert "does not know task gone" in lost_done.failure_reason
    assert late_done.status == "completed" and late_done.error_type is None
    rows = read_generations(cfg.output, latest=False)
    assert "media" in set(rows.error_type.dropna())  # the HTML page was recorded, then the next poll stored the clip


def test_an_auth_error_stops_the_run(tmp_path):
    cfg = config(tmp_path, write_list(tmp_path, ROWS[:1]))
    luma = FakeLuma(submit_script={"cat dance": [httpx.Response(401, json={"error": "bad key"})]})
    with pytest.raises(AuthError):
        run_generation(cfg, [Work(load_prompts(cfg)[0], None, True)], luma)


def test_concurrent_durable_records_share_writes(tmp_path):
    cfg = config(tmp_path, write_list(tmp_path, ROWS[:1]))
    table = GenerationsTable(cfg.output)
    writes = []
    original = table.write

    def counting(rows, run_id):
        writes.append(len(rows))
        return original(rows, run_id)

    table.write = counting

    async def main():
        recorder = Recorder(table, "r", flush_seconds=1000)
        rows = [Generation(f"k{i}", revision=1, created_at=T0, status="in_progress").row() for i in range(20)]
        await asyncio.gather(*(recorder.record(r, durable=True) for r in rows))
        await recorder.close()
        return recorder.files

    files = asyncio.run(main())
    assert writes == [1, 19] and len(files) == 1  # one write for those waiting together, then merged into one
    assert len(table.latest(f"k{i}" for i in range(20))) == 20 and len(read_generations(cfg.output, latest=False)) == 20


def history(table: GenerationsTable, prompts: int, revisions: int = 3, run: str = "r") -> None:
    """Every prompt's rows as runs write them: a revision per state change, each with its states so far."""
    rows = []
    for rev in range(1, revisions + 1):
        for p in range(prompts):
            states = [{"state": s, "seen_at": T0 + timedelta(seconds=i)} for i, s in enumerate(
                ("pending", "dreaming", "completed")[:rev])]
            rows.append(Generation(f"{p:06x}", revision=rev, run_id=run, created_at=T0 + timedelta(minutes=rev),
                                   task_id=f"t{p}", status="completed" if rev == 3 else "in_progress",
                                   state=states[-1]["state"], states=tuple(states)).row())
    table.write(rows, run)


def test_a_run_looks_up_only_its_prompts_in_the_table(tmp_path, monkeypatch):
    import tasks.record.latest as latest
    from tasks.generate.table import GenerationStore

    monkeypatch.setattr(latest, "ROW_GROUP", 200)
    cfg = config(tmp_path, write_list(tmp_path, ROWS[:1]))
    table = GenerationsTable(cfg.output)
    history(table, 3000)
    GenerationStore.open(table.output, fold_rows=0)  # the base: 3,000 prompts' current rows in groups of 200
    recorder_files = [table.write([Generation("000007", revision=4, run_id="r2", created_at=T0 + timedelta(hours=1),
                                              status="failed", error_type="lost").row()], "r2"),
                      table.write([Generation("ffffff", revision=1, run_id="r2", created_at=T0).row()], "r2")]
    table.merge([f for files in recorder_files for f in files], "r2")  # a run's files merged: new names, the delta
    store = GenerationStore.open(table.output)
    assert store.stats.base_groups == 15 and store.stats.delta_rows == 2
    got = {r["prompt_key"]: r for r in store.rows(["000007", "000008", "000009", "ffffff"]).to_pylist()}
    assert store.stats.groups_read == 1  # of 15
    assert (got["000007"]["revision"], got["000007"]["status"]) == (4, "failed")  # the delta's newer revision wins
    assert got["000008"]["status"] == "completed" and [s["state"] for s in got["000008"]["states"]] == [
        "pending", "dreaming", "completed"]
    assert got["ffffff"]["revision"] == 1
    every = read_generations(cfg.output).set_index("prompt_key")  # the whole table, as a user reads it
    wanted = [f"{p:06x}" for p in range(0, 3000, 97)] + ["000007", "ffffff", "nope"]
    found = table.latest(wanted)
    assert set(found) == set(wanted) - {"nope"}
    assert all((found[k].revision, found[k].status) == (every.loc[k, "revision"], every.loc[k, "status"])
               for k in found)


def test_the_table_store_agrees_after_a_merge_that_follows_a_fold(tmp_path):
    """A second run folds while the first still writes; the first then merges its files (names the fold covered
    vanish, the same rows come back under a new name): every prompt still reads its current row, once."""
    from tasks.generate.table import GenerationStore

    cfg = config(tmp_path, write_list(tmp_path, ROWS[:1]))
    table = GenerationsTable(cfg.output)
    files = []
    for rev in range(1, 4):
        files += table.write([Generation(f"{p:02x}", revision=rev, run_id="r1", created_at=T0 + timedelta(minutes=rev),
                                         status="in_progress").row() for p in range(40)], "r1")
    GenerationStore.open(table.output, fold_rows=0)
    table.merge(files, "r1")
    store = GenerationStore.open(table.output)
    assert store.stats.delta_files == 1 and store.stats.delta_rows == 120
    rows = store.rows([f"{p:02x}" for p in range(40)])
    assert rows.num_rows == 40 and set(rows["revision"].to_pylist()) == {3}
    store.fold()
    assert GenerationStore.open(table.output).rows(["05"])["revision"].to_pylist() == [3]


# -- the config --------------------------------------------------------------------------------------------------


def test_generation_configs_are_checked_naming_the_file_and_key(tmp_path, monkeypatch):
    from tasks.config.load import PROJECT_ROOT, load_generate_config

    path = tmp_path / "gen.yaml"
    base = {"prompts": {"url": "p.csv", "defaults": {"aspect_ratio": "21:9"}}, "provider": {"base_url": "localapi"},
            "output": {"url": "out"}, "pol": {}}
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError) as e:
        load_generate_config(path)
    text = str(e.value)
    assert f"{path}: pol: unknown key; allowed keys here: job, prompts, images, provider, poll" in text
    assert f"{path}: prompts.defaults.aspect_ratio: Value error, must be one of 1:1, 4:3, 3:4, 16:9, 9:16" in text
    base.pop("pol")
    base["prompts"]["defaults"] = {"aspect_ratio": 969}  # an unquoted 16:9 in YAML
    base["provider"] = {"base_url": "https://api.gpt.ge", "api_key_env": "NOT_SET_ANYWHERE"}
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        load_generate_config(path)
    cfg = load_generate_config(path, check_credentials=False)
    assert cfg.prompts.defaults.aspect_ratio == "16:9" and cfg.output.table_url == "out/generations"
    monkeypatch.setenv("GPTGE_API_KEY", "k")
    for name in ("generate-demo.yaml", "generate-ads.yaml"):  # the shipped examples are valid
        load_generate_config(PROJECT_ROOT / "configs" / name)
