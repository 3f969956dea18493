"""The helpers future sections (deals, orders, tickets, ...) write the document with."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from httpx import AsyncClient

from chassis.db import Database, commit
from gateway.readmodel import document

T1 = datetime(2025, 2, 1, 9, 30, tzinfo=UTC)


class TestSectionHelpers:
    async def test_items_put_replaced_removed_and_sections_set(
        self,
        client: AsyncClient,
        events: Any,
        read_360: Callable[..., Any],
        new_id: Callable[[], str],
        db_url: str,
    ) -> None:
        cid = new_id()
        await events.publish(events.contact_created("acme", cid))
        await read_360(cid)
        db = Database(db_url, pool_size=1)
        try:
            async with db.sessionmaker() as session:
                for item in (
                    {"id": "d1", "amount": "10.00"},
                    {"id": "d2", "amount": "5.00"},
                    {"id": "d1", "amount": "12.50"},
                ):
                    await document.put_section_item(
                        session, tenant="acme", contact_id=cid, section="deals", item=item, as_of=T1
                    )
                await document.remove_section_item(
                    session, tenant="acme", contact_id=cid, section="deals", item_id="d2", as_of=T1
                )
                await document.set_section(
                    session,
                    tenant="acme",
                    contact_id=cid,
                    section="loyalty",
                    value={"tier": "gold"},
                    as_of=T1,
                )
                # another tenant's customer with the same id is not touched
                await document.set_section(
                    session,
                    tenant="globex",
                    contact_id=cid,
                    section="metrics",
                    value={"x": 1},
                    as_of=T1,
                )
                await commit(session)
        finally:
            await db.dispose()
        doc = (await read_360(cid)).json()
        assert doc["deals"] == [{"id": "d1", "amount": "12.50"}]
        assert doc["loyalty"] == {"tier": "gold"}
        assert doc["metrics"] == {}
        assert doc["as_of"] == "2025-02-01T09:30:00Z"
        assert doc["contact"]["first_name"] == "Ada"
