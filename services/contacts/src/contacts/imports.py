"""Bulk import jobs: a CSV or XLSX file becomes contacts through the batch upsert path.

The job row (with the uploaded file) is written by the request; an asyncio task in the
service processes the rows in chunks of `import_chunk_size`, one transaction per chunk that
applies the chunk, records its row errors and advances the job's counters, so progress is
never ahead of or behind the data. A bad row is reported and skipped.

Crash recovery: *resume*. A running job holds a PostgreSQL advisory lock on its id. At
startup every queued/running job whose lock is free (its worker died) is picked up again
from its last committed chunk; replaying nothing twice because the counters commit with the
chunk."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import uuid
import zlib
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any

from fastapi import FastAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.auth import Principal
from chassis.db import Database, commit
from contacts import repository as repo
from contacts.access import Caller
from contacts.errors import ImportJobNotFound
from contacts.events import EventSink
from contacts.models import CONTACT_SCALARS, ContactIn
from contacts.validation import FieldError, FieldSpec, ValidationFailed
from contacts.writer import ContactWriter, Write, now

log = logging.getLogger("contacts.imports")

SCALAR_TARGETS = (*CONTACT_SCALARS, "tags")
PREFIX_TARGETS = ("custom_fields.", "external_ids.", "consent.")
CONSENT_KEYS = ("email_marketing", "legal_basis")
FORMATS = {".csv": "csv", ".xlsx": "xlsx"}


class FileUnreadable(ValueError):
    pass


def check_target(target: str) -> str | None:
    """Why `target` is not a contact field an import column can map to (None when valid)."""
    if target in SCALAR_TARGETS:
        return None
    for prefix in PREFIX_TARGETS:
        if target.startswith(prefix) and len(target) > len(prefix):
            if prefix == "consent." and target[len(prefix) :] not in CONSENT_KEYS:
                return "consent takes email_marketing or legal_basis"
            return None
    return (
        f"not a contact field; use one of {', '.join(SCALAR_TARGETS)}, "
        "custom_fields.<key>, external_ids.<system>, consent.<email_marketing|legal_basis>"
    )


def file_format(filename: str, content_type: str | None) -> str | None:
    name = filename.lower()
    for ext, fmt in FORMATS.items():
        if name.endswith(ext):
            return fmt
    if content_type and "spreadsheetml" in content_type:
        return "xlsx"
    if content_type and content_type.startswith("text/csv"):
        return "csv"
    return None


def read_rows(content: bytes, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, {column: value}) of every non-empty data row; the header is row 1."""
    if fmt == "csv":
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise FileUnreadable("CSV must be UTF-8") from e
        try:
            dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel  # type: ignore[assignment]
        reader = csv.reader(io.StringIO(text), dialect)
        table: Iterator[list[Any]] = iter(reader)
    else:
        table = _xlsx_rows(content)
    try:
        header = [str(h).strip() if h is not None else "" for h in next(table)]
    except StopIteration:
        raise FileUnreadable("the file is empty") from None
    if not any(header):
        raise FileUnreadable("the first row must name the columns")
    for number, cells in enumerate(table, start=2):
        values = {
            h: v
            for h, v in zip(header, cells, strict=False)
            if h and v is not None and str(v).strip() != ""
        }
        if values:
            yield number, values


def _xlsx_rows(content: bytes) -> Iterator[list[Any]]:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many types for a broken file
        raise FileUnreadable(f"not a readable XLSX file: {type(e).__name__}") from e
    try:
        for row in wb.worksheets[0].iter_rows(values_only=True):
            yield list(row)
    finally:
        wb.close()


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return (
            value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat()
        )
    if isinstance(value, date):
        return value.isoformat()
    return value.strip() if isinstance(value, str) else value


def _typed(spec: FieldSpec | None, value: Any) -> Any:
    """A CSV cell (text) as the JSON value a custom field of this type takes."""
    if spec is None or not isinstance(value, str):
        if spec is not None and spec.type == "text" and not isinstance(value, str):
            return str(value)
        return value
    if spec.type == "number":
        try:
            number = float(value)
        except ValueError:
            return value  # the validator names the error
        return int(number) if number.is_integer() else number
    if spec.type == "bool":
        lowered = value.lower()
        if lowered in ("true", "yes", "1", "y"):
            return True
        if lowered in ("false", "no", "0", "n"):
            return False
        return value
    if spec.type == "multi_enum":
        return [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
    return value


def row_to_item(
    values: Mapping[str, Any], mapping: Mapping[str, str], specs: Mapping[str, FieldSpec]
) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for column, raw in values.items():
        target = mapping.get(column) or (column if check_target(column) is None else None)
        if target is None:
            continue
        value = _cell(raw)
        if target == "tags":
            item["tags"] = [t.strip() for t in str(value).replace(";", ",").split(",") if t.strip()]
        elif target.startswith("custom_fields."):
            key = target.split(".", 1)[1]
            item.setdefault("custom_fields", {})[key] = _typed(specs.get(key), value)
        elif target.startswith("external_ids."):
            item.setdefault("external_ids", {})[target.split(".", 1)[1]] = str(value)
        elif target.startswith("consent."):
            item.setdefault("consent", {})[target.split(".", 1)[1]] = str(value)
        else:
            item[target] = str(value) if not isinstance(value, str) else value
    return item


def _principal(actor: Mapping[str, Any]) -> Principal:
    return Principal(
        sub=actor["sub"],
        tenant=actor["tenant"],
        roles=frozenset(actor["roles"]),
        teams=tuple(actor.get("teams", ())),
        client=actor.get("client", ""),
    )


def actor_record(caller: Caller) -> dict[str, Any]:
    p = caller.principal
    return {
        "sub": p.sub,
        "tenant": p.tenant,
        "roles": sorted(p.roles),
        "teams": list(p.teams),
        "client": p.client,
        "origin": caller.origin,
    }


def _lock_key(job_id: uuid.UUID) -> int:
    return zlib.crc32(f"contacts-import:{job_id}".encode())


class ImportRunner:
    """The import jobs running in this process."""

    def __init__(self, db: Database, region: str, chunk_size: int, max_running: int = 4) -> None:
        self.db = db
        self.region = region
        self.chunk_size = max(1, chunk_size)
        self.tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        # FIFO (asyncio's semaphore lets no newcomer pass a waiter): jobs start in order
        self._slots = asyncio.Semaphore(max(1, max_running))

    def start(self, tenant: str, job_id: uuid.UUID) -> None:
        task = asyncio.create_task(self._run(tenant, job_id), name=f"import-{job_id}")
        self.tasks[job_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job_id, None))

    async def resume_unfinished(self) -> None:
        async with self.db.sessionmaker() as session:
            jobs = await repo.unfinished_jobs(session)
        for tenant, job_id in jobs:
            if job_id not in self.tasks:
                self.start(tenant, job_id)

    async def stop(self) -> None:
        """Stop on shutdown; the jobs stay `running` and resume at the next start."""
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _run(self, tenant: str, job_id: uuid.UUID) -> None:
        # a connection of its own: the lock is session state, held for the whole job
        async with self._slots, self.db.dedicated() as lock_conn:
            if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(job_id)):
                return  # another replica runs it
            try:
                await self._process(tenant, job_id)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("import %s failed", job_id)
                async with self.db.sessionmaker() as session:
                    await repo.update_job(
                        session,
                        tenant,
                        job_id,
                        status="failed",
                        error=f"{type(e).__name__}: {e}"[:1000],
                        updated_at=now(),
                        finished_at=now(),
                    )
                    await commit(session)
            finally:
                with contextlib.suppress(Exception):
                    await lock_conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(job_id))

    async def _process(self, tenant: str, job_id: uuid.UUID) -> None:
        job = None
        for _ in range(100):  # the request that created the job may not have committed yet
            async with self.db.sessionmaker() as session:
                job = await repo.get_job(session, tenant, job_id, with_content=True)
            if job is not None:
                break
            await asyncio.sleep(0.05)
        if job is None or job["status"] not in ("queued", "running"):
            return
        async with self.db.sessionmaker() as session:
            specs = await repo.field_specs(session, tenant, "contact")
            try:
                rows = list(read_rows(job["content"], job["file_format"]))
            except FileUnreadable as e:
                await repo.update_job(
                    session,
                    tenant,
                    job_id,
                    status="failed",
                    error=str(e),
                    updated_at=now(),
                    finished_at=now(),
                )
                await commit(session)
                return
            start = job["processed"]
            if start < len(rows):  # a resumed job may hold errors of an uncommitted chunk
                await repo.delete_job_errors_from(session, tenant, job_id, rows[start][0])
            await repo.update_job(
                session, tenant, job_id, status="running", total=len(rows), updated_at=now()
            )
            await commit(session)
        counts = {k: job[k] for k in ("processed", "created", "updated", "failed")}
        actor = job["actor"]
        caller = Caller(_principal(actor), actor.get("origin", ""))
        mapping: dict[str, str] = job["mapping"]
        for offset in range(start, len(rows), self.chunk_size):
            chunk = rows[offset : offset + self.chunk_size]
            async with self.db.sessionmaker() as session:
                await self._chunk(session, caller, job_id, chunk, mapping, specs, counts)
                await repo.update_job(session, tenant, job_id, updated_at=now(), **counts)
                await commit(session)
        async with self.db.sessionmaker() as session:
            await repo.update_job(
                session, tenant, job_id, status="completed", updated_at=now(), finished_at=now()
            )
            await commit(session)

    async def _chunk(
        self,
        session: AsyncSession,
        caller: Caller,
        job_id: uuid.UUID,
        chunk: list[tuple[int, dict[str, Any]]],
        mapping: Mapping[str, str],
        specs: Mapping[str, FieldSpec],
        counts: dict[str, int],
    ) -> None:
        writes = []
        for i, (_, values) in enumerate(chunk):
            w = Write.parse(i, row_to_item(values, mapping, specs))
            if w.data is not None and not w.fields:
                w = Write(i, ContactIn(), set(), errors=[FieldError((), "no mapped values")])
            writes.append(w)
        writer = ContactWriter(
            session, caller, self.region, EventSink(session, caller.principal, caller.origin)
        )
        outcomes = await writer.apply(writes)
        errors: list[tuple[int, str | None, str]] = []
        for (row_number, _), outcome in zip(chunk, outcomes, strict=True):
            if outcome.status == "error":
                counts["failed"] += 1
                errors += [(row_number, e.field or None, e.message) for e in outcome.errors]
            else:
                counts[outcome.status] += 1
        counts["processed"] += len(chunk)
        await repo.add_job_errors(session, caller.tenant, job_id, errors)


def runner(app: FastAPI) -> ImportRunner:
    r: ImportRunner = app.state.imports
    return r


class ImportService:
    """The request side: validate the upload, persist the job, read its progress."""

    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller

    async def create(
        self, filename: str, content_type: str | None, content: bytes, mapping: Mapping[str, str]
    ) -> dict[str, Any]:
        self.caller.require_writer()
        errors = [
            FieldError(("mapping", column), why)
            for column, target in mapping.items()
            if (why := check_target(target)) is not None
        ]
        fmt = file_format(filename, content_type)
        if fmt is None:
            errors.append(FieldError(("file",), "must be a .csv or .xlsx file"))
        else:
            try:
                next(read_rows(content, fmt), None)
            except FileUnreadable as e:
                errors.append(FieldError(("file",), str(e)))
        if errors:
            raise ValidationFailed(errors)
        assert fmt is not None
        ts = now()
        row = {
            "tenant_id": self.caller.tenant,
            "id": uuid.uuid4(),
            "status": "queued",
            "filename": filename,
            "file_format": fmt,
            "content": content,
            "mapping": dict(mapping),
            "total": None,
            "processed": 0,
            "created": 0,
            "updated": 0,
            "failed": 0,
            "error": None,
            "actor": actor_record(self.caller),
            "created_at": ts,
            "updated_at": ts,
            "finished_at": None,
        }
        await repo.insert_job(self.session, row)
        row.pop("content")
        return row

    async def get(self, job_id: uuid.UUID, error_limit: int = 1000) -> dict[str, Any]:
        job = None
        if not self.caller.sees_nothing:
            job = await repo.get_job(self.session, self.caller.tenant, job_id)
        # a sales rep reads only the jobs they started: a job's row errors quote its file
        mine = job is not None and (job.get("actor") or {}).get("sub") == self.caller.sub
        if not self.caller.sees_tenant and not mine:
            job = None
        if job is None:
            raise ImportJobNotFound(job_id)
        job["errors"] = await repo.job_errors(self.session, self.caller.tenant, job_id, error_limit)
        return job
