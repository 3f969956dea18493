"""The baselines of `make bench`: FastAPI + raw asyncpg, no chassis, no auth.

GET /doc/{id}      single-row read of a JSON document (the 360 read's baseline)
POST /contacts     two-insert transaction: state + outbox row (the create's baseline)
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request, Response

DSN = os.environ["BASELINE_DSN"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_docs (id uuid PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS bench_contacts (id uuid PRIMARY KEY, tenant_id text NOT NULL,
    email text, first_name text, last_name text, data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS bench_outbox (id bigserial PRIMARY KEY, event_id uuid NOT NULL,
    subject text NOT NULL, payload bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(DSN, min_size=4, max_size=10)
    async with app.state.pool.acquire() as c:
        await c.execute(SCHEMA)
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/doc/{doc_id}")
async def read_doc(doc_id: uuid.UUID, request: Request) -> Response:
    row = await request.app.state.pool.fetchval(
        "SELECT doc::text FROM bench_docs WHERE id = $1", doc_id
    )
    if row is None:
        return Response(status_code=404)
    return Response(content=row, media_type="application/json")


@app.post("/contacts", status_code=201)
async def create_contact(request: Request) -> Response:
    body = await request.json()
    cid = uuid.uuid4()
    async with request.app.state.pool.acquire() as c, c.transaction():
        await c.execute(
            "INSERT INTO bench_contacts (id, tenant_id, email, first_name, last_name, data) "
            "VALUES ($1, 'acme', $2, $3, $4, $5)",
            cid,
            body.get("email"),
            body.get("first_name"),
            body.get("last_name"),
            json.dumps(body),
        )
        await c.execute(
            "INSERT INTO bench_outbox (event_id, subject, payload) VALUES ($1, $2, $3)",
            uuid.uuid4(),
            "crm.contacts.acme.contact.created",
            json.dumps(body).encode(),
        )
    return Response(
        content=json.dumps({"id": str(cid), **body}), status_code=201, media_type="application/json"
    )
