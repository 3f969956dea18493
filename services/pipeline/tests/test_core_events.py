"""Events reach JetStream (stream CRM_PIPELINE) with CloudEvents headers, gap-free versions
and full snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from crm.pipeline.v1 import pipeline_pb2 as pb
from pipeline.core.testkit import CoreApi, new_id, parse


@pytest.fixture
def api(client: Any, crm_infra: Any, db_url: str, app: Any) -> CoreApi:
    return CoreApi(client, crm_infra, db_url, app)


def m(version: int) -> dict[str, str]:
    return {"If-Match": f'"{version}"'}


def versions_are_gap_free(msgs: list[Any]) -> None:
    seqs: dict[str, list[int]] = {}
    for msg in msgs:
        seqs.setdefault(msg.headers["ce-subject"], []).append(int(msg.headers["ce-sequence"]))
    for versions in seqs.values():
        assert versions == list(range(1, len(versions) + 1))


class TestOrgEvents:
    async def test_team_and_pipeline_lifecycle(self, api: CoreApi) -> None:
        t = await api.team("East", [{"user_id": "u1", "role": "manager"}])
        await api.client.patch(
            f"/v1/teams/{t['id']}", json={"name": "East 2"}, headers={**api.h(), **m(1)}
        )
        await api.client.put(
            f"/v1/teams/{t['id']}/members/u2", json={"role": "rep"}, headers=api.h()
        )
        await api.client.delete(f"/v1/teams/{t['id']}", headers={**api.h(), **m(3)})
        p = await api.pipeline()
        await api.client.patch(
            f"/v1/pipelines/{p['id']}", json={"name": "NB"}, headers={**api.h(), **m(1)}
        )
        await api.client.delete(f"/v1/pipelines/{p['id']}", headers={**api.h(), **m(2)})
        msgs = await api.events(7)
        assert [x.headers["ce-type"] for x in msgs] == [
            "crm.pipeline.team.created.v1",
            "crm.pipeline.team.updated.v1",
            "crm.pipeline.team.updated.v1",
            "crm.pipeline.team.deleted.v1",
            "crm.pipeline.pipeline.created.v1",
            "crm.pipeline.pipeline.updated.v1",
            "crm.pipeline.pipeline.deleted.v1",
        ]
        assert msgs[0].subject == "crm.pipeline.acme.team.created"
        created = parse(msgs[0], pb.TeamCreated)
        assert (created.team.name, created.team.version, created.meta.version) == ("East", 1, 1)
        assert [(x.user_id, x.role) for x in created.team.members] == [("u1", "manager")]
        upd = parse(msgs[2], pb.TeamUpdated)
        assert list(upd.meta.changed_fields) == ["members"]
        assert [x.user_id for x in upd.team.members] == ["u1", "u2"]
        pc = parse(msgs[4], pb.PipelineCreated)
        assert [s.name for s in pc.pipeline.stages] == [
            "Qualify",
            "Proposal",
            "Negotiation",
            "Won",
            "Lost",
        ]
        assert pc.pipeline.stages[3].is_won
        assert pc.pipeline.stages[1].forecast_category == "best_case"
        assert list(parse(msgs[5], pb.PipelineUpdated).meta.changed_fields) == ["name"]
        assert msgs[6].headers["ce-sequence"] == "3"
        versions_are_gap_free(msgs)


class TestDealEvents:
    async def test_full_lifecycle(self, api: CoreApi) -> None:
        p = await api.pipeline()
        s = p["stages"]
        h = api.h(sub="alice", **{"X-Origin": "erp:sap"})
        d = await api.deal(
            p,
            headers=h,
            owner_id="u-rep1",
            contact_id=new_id(),
            forecast_category="commit",
            expected_close_date="2027-02-15",
            splits=[{"user_id": "u-rep1", "percent": "60"}, {"user_id": "u-rep2", "percent": "40"}],
            line_items=[{"product": "License", "quantity": 1, "unit_price": "9000.00"}],
            external_ids={"sap": "OPP-1"},
        )
        url = f"/v1/deals/{d['id']}"
        await api.client.patch(
            url,
            json={"name": "Renamed", "expected_close_date": "2027-03-01"},
            headers={**api.h(), **m(1)},
        )
        await api.client.patch(
            url, json={"stage_id": s[2]["id"], "name": "Moved"}, headers={**api.h(), **m(2)}
        )
        await api.client.post(
            f"{url}/won", json={"closed_at": "2026-11-20T10:00:00Z"}, headers=api.h()
        )
        await api.client.post(f"{url}/reopen", json={}, headers=api.h())
        await api.client.post(f"{url}/lost", json={"lost_reason": "price"}, headers=api.h())
        await api.client.delete(url, headers={**api.h(), **m(6)})
        msgs = await api.events(7, ".deal.")
        assert [x.subject for x in msgs] == [
            f"crm.pipeline.acme.deal.{e}"
            for e in ("created", "updated", "stage_changed", "won", "reopened", "lost", "deleted")
        ]
        assert [x.headers["ce-sequence"] for x in msgs] == ["1", "2", "3", "4", "5", "6", "7"]
        assert all(x.headers["ce-subject"] == d["id"] for x in msgs)
        assert all(x.headers["Nats-Msg-Id"] == x.headers["ce-id"] for x in msgs)

        created = parse(msgs[0], pb.DealCreated)
        assert (created.meta.actor, created.meta.origin) == ("alice", "erp:sap")
        deal = created.deal
        assert (deal.amount.amount, deal.amount.currency) == ("9000.00", "USD")
        assert (deal.stage_name, deal.forecast_category, deal.version) == ("Qualify", "commit", 1)
        assert deal.external_ids["sap"] == "OPP-1"
        assert deal.expected_close_date == "2027-02-15"

        updated = parse(msgs[1], pb.DealUpdated)
        assert list(updated.meta.changed_fields) == ["name", "expected_close_date"]
        assert updated.deal.name == "Renamed"

        moved = parse(msgs[2], pb.DealStageChanged)
        assert (moved.from_stage_id, moved.to_stage_id) == (s[0]["id"], s[2]["id"])
        assert list(moved.meta.changed_fields) == ["name", "stage_id", "forecast_category"]
        assert (moved.deal.stage_name, moved.deal.forecast_category) == ("Negotiation", "commit")

        won = parse(msgs[3], pb.DealWon)
        assert won.from_stage_id == s[2]["id"]
        w = won.deal
        assert (w.status, w.stage_id, w.forecast_category) == ("won", s[3]["id"], "closed")
        assert (w.amount.amount, w.amount.currency, w.owner_id) == ("9000.00", "USD", "u-rep1")
        assert [(x.user_id, x.percent) for x in w.splits] == [("u-rep1", "60"), ("u-rep2", "40")]
        assert [(x.product, x.amount) for x in w.line_items] == [("License", "9000.00")]
        assert w.closed_at.ToJsonString() == "2026-11-20T10:00:00Z"

        reopened = parse(msgs[4], pb.DealReopened)
        assert (reopened.previous_status, reopened.deal.status) == ("won", "open")
        assert reopened.previous_closed_at.ToJsonString() == "2026-11-20T10:00:00Z"
        assert reopened.deal.stage_id == s[2]["id"]
        assert not reopened.deal.HasField("closed_at")

        lost = parse(msgs[5], pb.DealLost)
        assert (lost.deal.lost_reason, lost.deal.stage_name, lost.from_stage_id) == (
            "price",
            "Lost",
            s[2]["id"],
        )

        deleted = parse(msgs[6], pb.DealDeleted)
        assert (deleted.meta.version, deleted.deal.id) == (7, d["id"])

    async def test_batch_emits_one_event_per_version(self, api: CoreApi) -> None:
        p = await api.pipeline()
        items = [
            {"name": "A", "pipeline_id": p["id"], "currency": "EUR", "external_ids": {"erp": "1"}},
            {"external_ids": {"erp": "1"}, "amount": "5"},
            {"external_ids": {"erp": "1"}, "amount": "5"},
            {"external_ids": {"erp": "1"}, "stage_id": p["stages"][1]["id"]},
            {"name": "bad", "pipeline_id": p["id"], "currency": "eur"},
        ]
        await api.client.post("/v1/deals/batch", json={"items": items}, headers=api.h())
        msgs = await api.events(3, ".deal.")
        assert [x.headers["ce-sequence"] for x in msgs] == ["1", "2", "3"]
        assert [x.subject.rsplit(".", 1)[1] for x in msgs] == [
            "created",
            "updated",
            "stage_changed",
        ]
        assert list(parse(msgs[1], pb.DealUpdated).meta.changed_fields) == ["amount"]
        assert parse(msgs[1], pb.DealUpdated).deal.amount.amount == "5.00"
        assert len(await api.stream()) == 4  # the pipeline and the three deal events


class TestOrderEvents:
    async def test_upserted_paid_refunded(self, api: CoreApi) -> None:
        p = await api.pipeline()
        d = await api.deal(p, owner_id="u-rep1")
        url = "/v1/orders/by-external-id/sap/SO-9"
        body = {
            "contact_id": new_id(),
            "deal_id": d["id"],
            "ordered_at": "2026-11-20T10:00:00Z",
            "amount": "99.90",
            "currency": "EUR",
        }
        await api.client.put(url, json=body, headers=api.h("erp_sync"))
        await api.client.put(url, json={"number": "SO-9"}, headers=api.h("erp_sync"))
        await api.client.put(
            url,
            json={"status": "paid", "paid_at": "2026-11-21T08:00:00Z"},
            headers=api.h("erp_sync"),
        )
        await api.client.put(url, json={"status": "refunded"}, headers=api.h("erp_sync"))
        msgs = await api.events(4, ".order.")
        assert [x.headers["ce-type"] for x in msgs] == [
            "crm.pipeline.order.upserted.v1",
            "crm.pipeline.order.upserted.v1",
            "crm.pipeline.order.paid.v1",
            "crm.pipeline.order.refunded.v1",
        ]
        versions_are_gap_free(msgs)
        first = parse(msgs[0], pb.OrderUpserted).order
        assert (first.owner_id, first.amount.amount, first.status, first.deal_id) == (
            "u-rep1",
            "99.90",
            "open",
            d["id"],
        )
        assert list(parse(msgs[1], pb.OrderUpserted).meta.changed_fields) == ["number"]
        paid = parse(msgs[2], pb.OrderPaid).order
        assert paid.paid_at.ToJsonString() == "2026-11-21T08:00:00Z"
        refunded = parse(msgs[3], pb.OrderRefunded).order
        assert refunded.HasField("refunded_at")
        assert refunded.version == 4
