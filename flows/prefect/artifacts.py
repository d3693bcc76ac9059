"""The operator's view in Prefect: a run's progress artifact and summary table, and a backfill's summed table."""

from __future__ import annotations

import json
import re
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, acreate_table_artifact, aupdate_progress_artifact
from prefect.runtime import deployment

from tasks.record.totals import RunTotals, sum_totals


class BatchProgress:
    """A deployed run's progress artifact (done / planned), written once per batch; a no-op outside deployments."""

    def __init__(self, artifact_id: UUID | None):
        self.artifact_id = artifact_id

    @classmethod
    async def start(cls, job: str) -> BatchProgress:
        if not deployment.id:
            return cls(None)
        return cls(await acreate_progress_artifact(progress=0.0, description=f"vidbatch {job}: items done / planned"))

    async def update(self, totals: RunTotals, final: bool = False) -> None:
        if self.artifact_id is None:
            return
        share = 100.0 if final else 100.0 * totals.done / totals.planned if totals.planned else 0.0
        await aupdate_progress_artifact(artifact_id=self.artifact_id, progress=round(min(share, 100.0), 1))


async def child_totals(flow_run_ids: list[UUID]) -> dict[str, dict]:
    """Each child run's totals from its table artifact (read over REST: the 3.8 client's read_artifacts is refused)."""
    from prefect.client.orchestration import get_client

    if not flow_run_ids:
        return {}
    limit, offset = 200, 0
    where = {"flow_run_id": {"any_": [str(i) for i in flow_run_ids]}, "type": {"any_": ["table"]}}
    out: dict[str, dict] = {}
    async with get_client() as client:
        while True:
            body = {"artifacts": where, "limit": limit, "offset": offset, "sort": "CREATED_DESC"}
            page = (await client._client.post("/artifacts/filter", json=body)).json()
            for a in page:
                data = json.loads(a["data"]) if isinstance(a["data"], str) else a["data"]
                if a["flow_run_id"] not in out and isinstance(data, list) and data:
                    out[a["flow_run_id"]] = data[0]
            if len(page) < limit:
                return out
            offset += len(page)


async def publish_backfill(job: str, shards: list[dict], totals: dict[str, dict]) -> dict:
    """The backfill's table artifact: one row per shard with its totals, then the sum; returns the sum."""
    rows = []
    for s in shards:
        t = totals.get(s["flow_run_id"] or "", {})
        rows.append({**s, **{k: t.get(k) for k in ("ok", "error", "skipped_already_done", "total_tokens",
                                                    "wall_time_s")}})
    summed = sum_totals([totals[s["flow_run_id"]] for s in shards if s["flow_run_id"] in totals])
    key = artifact_key("backfill", job)
    await acreate_table_artifact(table=rows + [{"shard": "TOTAL", "state": f"{summed['shards']} shards reported",
                                                **summed}], key=key, description=f"vidbatch backfill: {job}")
    return summed


def artifact_key(flow_name: str, job: str) -> str:
    """`<flow>-<job>` in the lowercase letters, digits and dashes that Prefect allows in a key."""
    return f"{flow_name}-" + re.sub(r"[^a-z0-9-]+", "-", job.lower()).strip("-")


async def publish_summary(flow_name: str, job: str, output: str, figures: dict) -> None:
    """A run's table artifact `<flow>-<job>`: one row of its figures (a dry run's plan left out)."""
    row = {"job": job, **{k: v for k, v in figures.items() if k != "planned"}}
    await acreate_table_artifact(table=[row], key=artifact_key(flow_name, job),
                                 description=f"vidbatch {flow_name}: {job} -> {output}")
