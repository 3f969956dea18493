"""Events land on JetStream (stream CRM_CONTACTS) with CloudEvents headers and proto bodies."""

from __future__ import annotations

from typing import Any

from crm.contacts.v1 import contacts_pb2 as pb


def parse(msg: Any, cls: Any) -> Any:
    assert msg.headers["ce-dataschema"] == cls.DESCRIPTOR.full_name
    out = cls()
    out.ParseFromString(msg.data)
    return out


class TestContactEvents:
    async def test_created_and_updated(self, api: Any) -> None:
        await api.field("size", "number")
        h = api.h(sub="alice", **{"X-Origin": "erp:sap"})
        c = await api.contact(
            headers=h,
            first_name="Ada",
            email="ada@x.com",
            custom_fields={"size": 1},
            external_ids={"sap": "1"},
            consent={"email_marketing": "denied"},
        )
        r = await api.patch(c, first_name="Augusta", custom_fields={"size": 2})
        assert r.status_code == 200
        msgs = await api.events(2, ".contact.")
        created, updated = msgs
        assert created.subject == "crm.contacts.acme.contact.created"
        assert created.headers["ce-type"] == "crm.contacts.contact.created.v1"
        assert created.headers["ce-sequence"] == "1"
        assert created.headers["Nats-Msg-Id"] == created.headers["ce-id"]
        assert created.headers["ce-subject"] == c["id"]
        ev = parse(created, pb.ContactCreated)
        assert (ev.meta.tenant_id, ev.meta.aggregate_id, ev.meta.version) == ("acme", c["id"], 1)
        assert (ev.meta.actor, ev.meta.origin) == ("alice", "erp:sap")
        assert ev.contact.email == "ada@x.com"
        assert ev.contact.external_ids["sap"] == "1"
        assert ev.contact.custom_fields["size"] == 1
        assert ev.contact.consent.email_marketing == pb.CONSENT_STATUS_DENIED
        assert updated.headers["ce-type"] == "crm.contacts.contact.updated.v1"
        assert updated.headers["ce-sequence"] == "2"
        up = parse(updated, pb.ContactUpdated)
        assert list(up.meta.changed_fields) == ["first_name", "custom_fields.size"]
        assert up.contact.first_name == "Augusta"
        assert up.contact.version == 2
        assert up.meta.origin == "dev-cli"  # no X-Origin: the token's client

    async def test_batch_emits_one_event_per_version(self, api: Any) -> None:
        items = [
            {"external_ids": {"sap": "1"}, "first_name": "A"},
            {"external_ids": {"sap": "1"}, "last_name": "B"},
            {"email": "bad"},
        ]
        await api.client.post("/v1/contacts/batch", json={"items": items}, headers=api.h())
        msgs = await api.events(2, ".contact.")
        assert [m.headers["ce-sequence"] for m in msgs] == ["1", "2"]
        assert [m.subject.rsplit(".", 1)[1] for m in msgs] == ["created", "updated"]
        assert list(parse(msgs[1], pb.ContactUpdated).meta.changed_fields) == ["last_name"]

    async def test_merge_erase_delete(self, api: Any) -> None:
        a = await api.contact(first_name="Ada", email="ada@x.com")
        b = await api.contact(first_name="Ada", phone="+12025550143")
        c = await api.contact(first_name="Gone")
        await api.client.post(
            f"/v1/contacts/{a['id']}/merge", json={"duplicate_ids": [b["id"]]}, headers=api.h()
        )
        await api.client.post(f"/v1/contacts/{a['id']}/erase", headers=api.h())
        await api.client.delete(f"/v1/contacts/{c['id']}", headers={**api.h(), "If-Match": '"1"'})
        msgs = await api.events(6, ".contact.")
        by_type = {m.headers["ce-type"]: m for m in msgs}
        merged = by_type["crm.contacts.contact.merged.v1"]
        assert merged.headers["ce-sequence"] == "2"
        assert merged.headers["ce-subject"] == a["id"]
        ev = parse(merged, pb.ContactMerged)
        assert ev.survivor_id == a["id"]
        assert list(ev.merged_ids) == [b["id"]]
        assert ev.survivor.phone == "+12025550143"
        assert ev.meta.version == 2
        erased = by_type["crm.contacts.contact.erased.v1"]
        assert erased.headers["ce-sequence"] == "3"
        er = parse(erased, pb.ContactErased)
        assert er.meta.aggregate_id == a["id"]
        assert b"ada@x.com" not in erased.data
        assert b"Ada" not in erased.data
        deleted = by_type["crm.contacts.contact.deleted.v1"]
        assert deleted.headers["ce-sequence"] == "2"
        assert deleted.subject.endswith("contact.deleted")
        # every aggregate's versions are gap-free
        seqs: dict[str, list[int]] = {}
        for m in msgs:
            seqs.setdefault(m.headers["ce-subject"], []).append(int(m.headers["ce-sequence"]))
        for versions in seqs.values():
            assert versions == list(range(1, len(versions) + 1))


class TestCompanyAndFieldEvents:
    async def test_company_lifecycle(self, api: Any) -> None:
        co = await api.company(
            name="Engines", annual_revenue={"amount": "10.50", "currency": "EUR"}
        )
        url = f"/v1/companies/{co['id']}"
        await api.client.patch(
            url,
            json={"name": "Engines Ltd", "employees": 5},
            headers={**api.h(), "If-Match": '"1"'},
        )
        await api.client.delete(url, headers={**api.h(), "If-Match": '"2"'})
        msgs = await api.events(3, ".company.")
        assert [m.headers["ce-type"] for m in msgs] == [
            "crm.contacts.company.created.v1",
            "crm.contacts.company.updated.v1",
            "crm.contacts.company.deleted.v1",
        ]
        assert [m.headers["ce-sequence"] for m in msgs] == ["1", "2", "3"]
        created = parse(msgs[0], pb.CompanyCreated)
        assert created.company.annual_revenue.amount == "10.50"
        assert created.company.annual_revenue.currency == "EUR"
        assert list(parse(msgs[1], pb.CompanyUpdated).meta.changed_fields) == ["name", "employees"]

    async def test_custom_field_defined_on_create_and_update(self, api: Any) -> None:
        f = await api.field("size", "enum", options=["s"])
        await api.client.patch(
            "/v1/custom-fields/contact/size",
            json={"options": ["s", "m"]},
            headers={**api.h(), "If-Match": '"1"'},
        )
        msgs = await api.events(2, ".custom_field.")
        assert {m.subject for m in msgs} == {"crm.contacts.acme.custom_field.defined"}
        assert [m.headers["ce-sequence"] for m in msgs] == ["1", "2"]
        d = parse(msgs[1], pb.CustomFieldDefined)
        assert d.meta.aggregate_id == f["id"]
        assert list(d.definition.options) == ["s", "m"]
        assert d.definition.version == 2
