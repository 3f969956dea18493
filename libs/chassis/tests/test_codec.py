from __future__ import annotations

import uuid

import pytest
from google.protobuf.wrappers_pb2 import Int64Value, StringValue

from chassis.events import IncomingEvent, MalformedEvent, OutgoingEvent, aggregate_of, subject_for


class TestCodec:
    def test_round_trip_keeps_every_attribute(self) -> None:
        out = OutgoingEvent(
            message=StringValue(value="hello"),
            ce_type="crm.contacts.contact.created.v1",
            tenant="acme",
            aggregate_id="c-1",
            version=3,
            source="crm/contacts",
        )
        headers = out.headers("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        assert headers["Nats-Msg-Id"] == headers["ce-id"] == str(out.id)
        assert headers["content-type"] == "application/protobuf"
        assert headers["ce-dataschema"] == "google.protobuf.StringValue"
        assert out.subject == "crm.contacts.acme.contact.created"
        inc = IncomingEvent.from_nats(out.subject, headers, out.message.SerializeToString())
        assert (inc.id, inc.type, inc.tenant, inc.aggregate_id, inc.version) == (
            str(out.id),
            out.ce_type,
            "acme",
            "c-1",
            3,
        )
        assert inc.time == out.time
        assert inc.aggregate == "contacts.contact"
        assert inc.parse(StringValue).value == "hello"
        assert inc.headers["traceparent"].startswith("00-0af7")

    def test_parse_refuses_another_message_type(self) -> None:
        out = OutgoingEvent(
            message=StringValue(value="x"),
            ce_type="crm.a.b.c.v1",
            tenant="t",
            aggregate_id="1",
            version=1,
            source="s",
        )
        inc = IncomingEvent.from_nats(out.subject, out.headers(), b"")
        with pytest.raises(MalformedEvent):
            inc.parse(Int64Value)

    @pytest.mark.parametrize("missing", ["ce-id", "ce-type", "ce-tenant", "ce-sequence", "ce-time"])
    def test_missing_header_is_malformed(self, missing: str) -> None:
        out = OutgoingEvent(
            message=StringValue(value="x"),
            ce_type="crm.a.b.c.v1",
            tenant="t",
            aggregate_id="1",
            version=1,
            source="s",
            id=uuid.uuid4(),
        )
        headers = out.headers()
        del headers[missing]
        with pytest.raises(MalformedEvent):
            IncomingEvent.from_nats("crm.a.t.b.c", headers, b"")

    def test_subjects(self) -> None:
        assert subject_for("crm.pipeline.deal.stage_changed.v1", "acme-2") == (
            "crm.pipeline.acme-2.deal.stage_changed"
        )
        assert aggregate_of("crm.pipeline.deal.won.v1") == "pipeline.deal"
        with pytest.raises(ValueError, match="not a platform event type"):
            subject_for("contacts.created", "acme")
