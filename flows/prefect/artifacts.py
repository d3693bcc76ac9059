"""The operator's view of deployed runs: a progress artifact updated per batch, and a backfill's summed table."""

from __future__ import annotations

import json
from uuid import UUID

from prefect.artifacts import (
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
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
    body = {"artifacts": {"flow_run_id": {"any_": [str(i) for i in flow_run_ids]}, "type": {"any_": ["table"]}},
            "limit": 200, "offset": 0, "sort": "CREATED_DESC"}
    out: dict[str, dict] = {}
    async with get_client() as client:
        while True:
            page = (await client._client.post("/artifacts/filter", json=body)).json()
            for a in page:
                data = json.loads(a["data"]) if isinstance(a["data"], str) else a["data"]
                if a["flow_run_id"] not in out and isinstance(data, list) and data:
                    out[a["flow_run_id"]] = data[0]
            if len(page) < body["limit"]:
                return out
            body["offset"] += len(page)


async def publish_backfill(job: str, shards: list[dict], totals: dict[str, dict]) -> dict:
    """The backfill's table artifact: one row per shard with its totals, then the sum; returns the sum."""
    rows = []
    for s in shards:
        t = totals.get(s["flow_run_id"] or "", {})
        rows.append({**s, **{k: t.get(k) for k in ("ok", "error", "skipped_already_done", "total_tokens",
                                                    "wall_time_s")}})
    summed = sum_totals([totals[s["flow_run_id"]] for s in shards if s["flow_run_id"] in totals])
    key = "backfill-" + "".join(c if c.isalnum() else "-" for c in job.lower()).strip("-")
    await acreate_table_artifact(table=rows + [{"shard": "TOTAL", "state": f"{summed['shards']} shards reported",
                                                **summed}], key=key, description=f"vidbatch backfill: {job}")
    return summed
