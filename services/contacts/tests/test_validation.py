"""Unit tests of normalization and custom field validation (no database)."""

from __future__ import annotations

import pytest

from contacts.validation import (
    FieldSpec,
    coerce_filter_value,
    normalize_domain,
    normalize_email,
    normalize_phone,
    validate_custom_fields,
    validate_value,
)


class TestEmail:
    def test_lower_cased(self) -> None:
        assert normalize_email("  Ada.Lovelace@Example.COM") == "ada.lovelace@example.com"

    @pytest.mark.parametrize("bad", ["nope", "a@", "@b.com", "a b@c.com", "a@b"])
    def test_invalid(self, bad: str) -> None:
        with pytest.raises(ValueError, match=r"."):
            normalize_email(bad)


class TestPhone:
    def test_national_number_uses_default_region(self) -> None:
        assert normalize_phone("(202) 555-0143", "US") == "+12025550143"

    def test_international_number_ignores_region(self) -> None:
        assert normalize_phone("+49 30 901820", "US") == "+4930901820"

    def test_region_matters(self) -> None:
        assert normalize_phone("030 901820", "DE") == "+4930901820"

    @pytest.mark.parametrize("bad", ["12", "not a phone", "+1 000 000 0000"])
    def test_invalid(self, bad: str) -> None:
        with pytest.raises(ValueError, match=r"."):
            normalize_phone(bad, "US")


class TestDomain:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("Example.COM", "example.com"),
            ("https://www.example.com/about", "example.com"),
            ("sub.example.co.uk", "sub.example.co.uk"),
        ],
    )
    def test_normalized(self, raw: str, expected: str) -> None:
        assert normalize_domain(raw) == expected

    @pytest.mark.parametrize("bad", ["localhost", "exa mple.com", "-bad.com"])
    def test_invalid(self, bad: str) -> None:
        with pytest.raises(ValueError, match=r"."):
            normalize_domain(bad)


def spec(type_: str, options: tuple[str, ...] = (), required: bool = False) -> FieldSpec:
    return FieldSpec("f", type_, required, options)


class TestCustomFieldTypes:
    @pytest.mark.parametrize(
        ("type_", "value", "expected"),
        [
            ("text", "hello", "hello"),
            ("number", 42, 42),
            ("number", 4.5, 4.5),
            ("decimal", "12.50", "12.50"),
            ("decimal", 12, "12"),
            ("date", "2024-02-29", "2024-02-29"),
            ("bool", True, True),
            ("email", "A@B.COM", "a@b.com"),
            ("url", "https://example.com/x", "https://example.com/x"),
        ],
    )
    def test_valid(self, type_: str, value: object, expected: object) -> None:
        assert validate_value(spec(type_), value) == expected

    @pytest.mark.parametrize(
        ("type_", "value"),
        [
            ("text", 5),
            ("text", "x" * 10_001),
            ("number", "42"),
            ("number", True),
            ("number", float("nan")),
            ("decimal", 1.5),
            ("decimal", "1,5"),
            ("decimal", "abc"),
            ("date", "2023-02-29"),
            ("date", "2024-1-1"),
            ("date", 20240101),
            ("bool", "true"),
            ("bool", 1),
            ("email", "nope"),
            ("url", "ftp://x.com"),
            ("url", "not a url"),
        ],
    )
    def test_invalid(self, type_: str, value: object) -> None:
        with pytest.raises(ValueError, match=r"."):
            validate_value(spec(type_), value)

    def test_enum(self) -> None:
        s = spec("enum", ("small", "large"))
        assert validate_value(s, "small") == "small"
        with pytest.raises(ValueError, match="one of"):
            validate_value(s, "medium")

    def test_multi_enum(self) -> None:
        s = spec("multi_enum", ("a", "b"))
        assert validate_value(s, ["a", "b", "a"]) == ["a", "b"]
        with pytest.raises(ValueError, match=r"."):
            validate_value(s, ["a", "c"])
        with pytest.raises(ValueError, match=r"."):
            validate_value(s, "a")


class TestCustomFields:
    specs = {
        "size": FieldSpec("size", "number"),
        "tier": FieldSpec("tier", "enum", True, ("gold", "silver")),
    }

    def test_errors_name_the_field_path(self) -> None:
        _, errors = validate_custom_fields(
            {"size": "big", "tier": "gold"}, self.specs, creating=True
        )
        assert [e.field for e in errors] == ["custom_fields.size"]

    def test_unknown_key(self) -> None:
        _, errors = validate_custom_fields({"nope": 1, "tier": "gold"}, self.specs, creating=True)
        assert [e.field for e in errors] == ["custom_fields.nope"]

    def test_required_on_create(self) -> None:
        _, errors = validate_custom_fields({"size": 1}, self.specs, creating=True)
        assert [(e.field, e.message) for e in errors] == [("custom_fields.tier", "is required")]

    def test_required_not_enforced_on_partial_update_but_cannot_be_cleared(self) -> None:
        values, errors = validate_custom_fields({"size": None}, self.specs, creating=False)
        assert errors == []
        assert values == {"size": None}
        _, errors = validate_custom_fields({"tier": None}, self.specs, creating=False)
        assert [e.field for e in errors] == ["custom_fields.tier"]


class TestFilterCoercion:
    def test_types(self) -> None:
        assert coerce_filter_value(spec("number"), "42") == 42
        assert coerce_filter_value(spec("bool"), "TRUE") is True
        assert coerce_filter_value(spec("multi_enum", ("a",)), "a") == ["a"]
        with pytest.raises(ValueError, match=r"."):
            coerce_filter_value(spec("number"), "x")
