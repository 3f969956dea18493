"""A nurture sequence's create_task step arrives as a campaigns event and becomes one task,
however often it is delivered."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from chassis.testing import wait_for
from crm.campaigns.v1.campaigns_pb2 import SequenceTaskRequested
from crm.common.v1.common_pb2 import EventMeta
from pipeline.core.testkit import CoreApi, new_id


@pytest.fixture
def api(client: Any, crm_infra: Any, db_url: str, app: Any) -> CoreApi:
    return CoreApi(client, crm_infra, db_url, app)


async def test_requested_task_is_created_once(api: CoreApi, client: Any) -> None:
    task_id, contact = new_id(), new_id()
    due = Timestamp()
    due.FromJsonString("2030-01-02T09:00:00Z")
    msg = SequenceTaskRequested(
        meta=EventMeta(tenant_id="acme", aggregate_id=task_id, version=1),
        contact_id=contact,
        assignee_id="u-rep1",
        title="Call the lead",
        due_at=due,
        priority="high",
    )
    # Published twice with distinct message ids: the second is a redelivery in effect.
    for _ in range(2):
        await api.publish_contacts_event(msg, task_id, 1)  # any stream: the subject decides

    async def created() -> dict[str, Any] | None:
        r = await client.get(f"/v1/tasks/{task_id}", headers=api.h())
        return dict(r.json()) if r.status_code == 200 else None

    task = await wait_for(created, message="task created from the request")
    assert task["title"] == "Call the lead"
    assert task["assignee_id"] == "u-rep1"
    assert task["contact_id"] == contact
    assert task["priority"] == "high"
    assert task["due_at"].startswith("2030-01-02T09:00:00")
    rows = await api.sql("SELECT count(*) FROM tasks WHERE id = $1::uuid", task_id)
    assert rows[0][0] == 1
