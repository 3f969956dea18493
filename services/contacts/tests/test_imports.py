"""Import jobs: CSV and XLSX through the background runner; crash recovery."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import openpyxl
from fastapi import FastAPI

from chassis.auth import Principal
from chassis.testing import wait_for
from contacts.access import Caller
from contacts.imports import ImportRunner, actor_record, runner

CSV = (
    "First,Last,E-mail,Size,SAP\n"
    "Ada,Lovelace,ada@x.com,10,1\n"
    "Bad,Email,not-an-email,5,2\n"
    ",,,,\n"
    "Cy,Clarke,cy@x.com,huge,3\n"
    "Dee,Dee,dee@x.com,7,4\n"
    "Ada,Again,ADA@x.com,11,1\n"
)
MAPPING = {
    "First": "first_name",
    "Last": "last_name",
    "E-mail": "email",
    "Size": "custom_fields.size",
    "SAP": "external_ids.sap",
}


async def finished(api: Any, job_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await api.client.get(f"/v1/contacts/imports/{job_id}", headers=api.h())
        body: dict[str, Any] = r.json()
        return body if body["status"] in ("completed", "failed") else None

    return await wait_for(probe, timeout=15, message="import finished")


class TestImportCsv:
    async def test_bad_rows_reported_good_rows_applied(self, api: Any) -> None:
        await api.field("size", "number")
        r = await api.client.post(
            "/v1/contacts/imports",
            headers=api.h(),
            files={"file": ("people.csv", CSV.encode(), "text/csv")},
            data={"mapping": json.dumps(MAPPING)},
        )
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"
        job = await finished(api, r.json()["id"])
        assert job["status"] == "completed"
        assert (job["total"], job["processed"], job["created"], job["updated"], job["failed"]) == (
            5,
            5,
            2,
            1,
            2,
        )
        assert [(e["row"], e["field"]) for e in job["errors"]] == [
            (3, "email"),
            (5, "custom_fields.size"),
        ]
        listed = await api.client.get("/v1/contacts?sort=email", headers=api.h())
        people = {i["email"]: i for i in listed.json()["items"]}
        assert set(people) == {"ada@x.com", "dee@x.com"}
        assert people["ada@x.com"]["last_name"] == "Again"
        assert people["ada@x.com"]["custom_fields"] == {"size": 11}
        assert people["dee@x.com"]["external_ids"] == {"sap": "4"}

    async def test_columns_named_like_fields_need_no_mapping(self, api: Any) -> None:
        body = "first_name;email;tags\nAda;ada@x.com;a, b\n"
        r = await api.client.post(
            "/v1/contacts/imports",
            headers=api.h(),
            files={"file": ("p.csv", body.encode(), "text/csv")},
        )
        job = await finished(api, r.json()["id"])
        assert job["created"] == 1
        listed = (await api.client.get("/v1/contacts", headers=api.h())).json()["items"]
        assert listed[0]["tags"] == ["a", "b"]

    async def test_bad_requests(self, api: Any) -> None:
        r = await api.client.post(
            "/v1/contacts/imports",
            headers=api.h(),
            files={"file": ("p.pdf", b"%PDF", "application/pdf")},
        )
        assert r.status_code == 422
        r = await api.client.post(
            "/v1/contacts/imports",
            headers=api.h(),
            files={"file": ("p.csv", b"a\n1\n", "text/csv")},
            data={"mapping": "{not json"},
        )
        assert r.status_code == 422
        r = await api.client.post(
            "/v1/contacts/imports",
            headers=api.h(),
            files={"file": ("p.csv", b"a\n1\n", "text/csv")},
            data={"mapping": json.dumps({"a": "shoe_size"})},
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["mapping", "a"]
        r = await api.client.post(
            "/v1/contacts/imports", headers=api.h(), files={"file": ("p.csv", b"", "text/csv")}
        )
        assert r.status_code == 422
        r = await api.client.post(
            "/v1/contacts/imports",
            headers=api.h("partner"),
            files={"file": ("p.csv", b"a\n1\n", "text/csv")},
        )
        assert r.status_code == 403

    async def test_job_of_other_tenant_is_404(self, api: Any) -> None:
        r = await api.client.post(
            "/v1/contacts/imports",
            headers=api.h(),
            files={"file": ("p.csv", b"email\na@x.com\n", "text/csv")},
        )
        job_id = r.json()["id"]
        await finished(api, job_id)
        other = await api.client.get(
            f"/v1/contacts/imports/{job_id}", headers=api.h(tenant="globex")
        )
        assert other.status_code == 404
        missing = await api.client.get(f"/v1/contacts/imports/{uuid.uuid4()}", headers=api.h())
        assert missing.status_code == 404

    async def test_a_sales_rep_reads_only_their_own_jobs(self, api: Any) -> None:
        rep = api.h(role="sales_rep", sub="rep-1")
        r = await api.client.post(
            "/v1/contacts/imports",
            headers=rep,
            files={"file": ("p.csv", b"email\nrep1@x.com\n", "text/csv")},
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        await finished(api, job_id)
        own = await api.client.get(f"/v1/contacts/imports/{job_id}", headers=rep)
        assert own.status_code == 200
        assert own.json()["created"] == 1
        other_rep = api.h(role="sales_rep", sub="rep-2")
        r = await api.client.get(f"/v1/contacts/imports/{job_id}", headers=other_rep)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        manager = await api.client.get(
            f"/v1/contacts/imports/{job_id}", headers=api.h(role="sales_manager")
        )
        assert manager.status_code == 200


class TestImportXlsx:
    async def test_xlsx(self, api: Any) -> None:
        await api.field("size", "number")
        wb = openpyxl.Workbook()
        ws = wb.active
        ws.append(["email", "Size", "phone"])
        ws.append(["a@x.com", 3, "+1 202 555 0143"])
        ws.append(["b@x.com", 4, "12"])
        buf = io.BytesIO()
        wb.save(buf)
        xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        r = await api.client.post(
            "/v1/contacts/imports",
            headers=api.h(),
            files={"file": ("p.xlsx", buf.getvalue(), xlsx)},
            data={"mapping": json.dumps({"Size": "custom_fields.size"})},
        )
        job = await finished(api, r.json()["id"])
        assert (job["created"], job["failed"]) == (1, 1)
        assert job["errors"] == [
            {"row": 3, "field": "phone", "message": job["errors"][0]["message"]}
        ]


class TestImportRecovery:
    async def test_running_job_left_by_a_crash_is_resumed(self, api: Any, app: FastAPI) -> None:
        """A job row left `running` (its worker died after the first chunk) is picked up from
        its last committed chunk when the service starts."""
        body = "email\n" + "".join(f"p{i}@x.com\n" for i in range(5))
        actor = actor_record(Caller(Principal("user-1", "acme", frozenset({"admin"})), "test"))
        job_id = uuid.uuid4()
        now = datetime.now(UTC)
        await api.sql(
            "INSERT INTO import_jobs (tenant_id, id, status, filename, file_format, content, "
            "mapping, total, processed, created, actor, created_at, updated_at) VALUES "
            "('acme', $1, 'running', 'p.csv', 'csv', $2, '{}', 5, 2, 2, $3, $4, $4)",
            job_id,
            body.encode(),
            json.dumps(actor),
            now,
        )
        await runner(app).resume_unfinished()
        job = await finished(api, str(job_id))
        assert job["status"] == "completed"
        assert (job["processed"], job["created"]) == (5, 5)
        rows = await api.sql("SELECT email FROM contacts ORDER BY email")
        assert [r["email"] for r in rows] == ["p2@x.com", "p3@x.com", "p4@x.com"]


class TestImportConcurrency:
    async def test_jobs_beyond_the_limit_wait_their_turn(self, api: Any, app: FastAPI) -> None:
        app.state.imports = ImportRunner(
            app.state.db, "US", chunk_size=500, max_running=2
        )  # the app's own runner has nothing running: replace it with a two-slot one
        jobs_runner = runner(app)
        process = jobs_runner._process
        running: list[uuid.UUID] = []
        most = 0

        async def slow_process(tenant: str, job_id: uuid.UUID) -> None:
            nonlocal most
            running.append(job_id)
            most = max(most, len(running))
            await asyncio.sleep(0.2)  # long enough for all five to be started meanwhile
            try:
                await process(tenant, job_id)
            finally:
                running.remove(job_id)

        jobs_runner._process = slow_process  # type: ignore[method-assign]
        ids = []
        for n in range(5):
            body = "email\n" + "".join(f"j{n}-{i}@x.com\n" for i in range(3))
            r = await api.client.post(
                "/v1/contacts/imports",
                headers=api.h(),
                files={"file": (f"j{n}.csv", body.encode(), "text/csv")},
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        for job_id in ids:
            job = await finished(api, job_id)
            assert (job["status"], job["created"]) == ("completed", 3)
        assert most == 2
