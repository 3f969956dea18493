"""Unit tests of duplicate scoring and merge field picking (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from contacts.dedup import pick_merged, score

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CO = uuid.uuid4()


def row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": uuid.uuid4(),
        "first_name": None,
        "last_name": None,
        "email": None,
        "phone": None,
        "company_id": None,
        "owner_id": None,
        "lifecycle_stage": None,
        "lead_source": None,
        "tags": [],
        "custom_fields": {},
        "external_ids": {},
        "consent": None,
        "updated_at": T0,
    }
    base.update(kw)
    return base


class TestScore:
    def test_same_email_is_strong(self) -> None:
        s, reasons = score(row(email="a@x.com"), row(email="a@x.com"))
        assert s >= 0.9
        assert reasons == ["email"]

    def test_same_phone(self) -> None:
        s, reasons = score(row(phone="+12025550143"), row(phone="+12025550143"))
        assert 0.75 <= s < 0.9
        assert reasons == ["phone"]

    def test_signals_reinforce_and_stay_below_one(self) -> None:
        a = row(email="a@x.com", phone="+1", first_name="Ada", last_name="Lovelace", company_id=CO)
        s, reasons = score(a, dict(a))
        assert 0.99 < s <= 1.0
        assert reasons == ["email", "phone", "name", "company"]

    def test_fuzzy_name_and_company(self) -> None:
        a = row(first_name="Jon", last_name="Smith", company_id=CO)
        b = row(first_name="John", last_name="Smith", company_id=CO)
        s_same_co, reasons = score(a, b)
        assert reasons == ["name", "company"]
        s_no_co, _ = score(a, {**b, "company_id": None})
        assert 0 < s_no_co < s_same_co

    def test_fuzzy_company_names(self) -> None:
        other = uuid.uuid4()
        a = row(first_name="Ada", last_name="King", company_id=CO)
        b = row(first_name="Ada", last_name="King", company_id=other)
        s, reasons = score(a, b, {CO: "Acme Corp", other: "ACME Corp."})
        assert "company" in reasons
        assert s > 0.6

    def test_unrelated_is_zero(self) -> None:
        s, reasons = score(
            row(first_name="Ada", email="a@x.com"), row(first_name="Zed", email="z@y.com")
        )
        assert s == 0
        assert reasons == []


class TestPickMerged:
    def test_survivor_wins_unless_empty_then_newest_loser(self) -> None:
        survivor = row(first_name="Ada", email=None, phone="", updated_at=T0)
        old = row(
            first_name="A.", email="old@x.com", phone="+1111", updated_at=T0 - timedelta(days=2)
        )
        new = row(email="new@x.com", updated_at=T0 - timedelta(days=1))
        out = pick_merged(survivor, [old, new])
        assert out["first_name"] == "Ada"
        assert out["email"] == "new@x.com"
        assert out["phone"] == "+1111"

    def test_custom_fields_per_key(self) -> None:
        survivor = row(custom_fields={"a": 1, "b": None})
        loser = row(custom_fields={"a": 2, "b": 3, "c": 4})
        assert pick_merged(survivor, [loser])["custom_fields"] == {"a": 1, "b": 3, "c": 4}

    def test_tags_and_external_ids_unioned(self) -> None:
        survivor = row(tags=["vip", "x"], external_ids={"sap": "1"})
        loser = row(tags=["VIP", "y"], external_ids={"sap": "2", "hubspot": "h"})
        out = pick_merged(survivor, [loser])
        assert out["tags"] == ["vip", "x", "y"]
        assert out["external_ids"] == {"sap": "1", "hubspot": "h"}

    def test_newest_consent_wins(self) -> None:
        granted = {
            "email_marketing": "granted",
            "legal_basis": "consent",
            "updated_at": "2024-01-01T00:00:00+00:00",
        }
        denied = {
            "email_marketing": "denied",
            "legal_basis": None,
            "updated_at": "2025-01-01T00:00:00+00:00",
        }
        out = pick_merged(row(consent=granted), [row(consent=denied)])
        assert out["consent"] == denied
