"""The reusable field types reject bad values with readable messages."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from fulfilment_kit.contracts.types import (
    CountryCode,
    CurrencyCode,
    MinorAmount,
    PositiveMinorAmount,
    Quantity,
    ReasonText,
    Sku,
)


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku = "SKU-1"
    quantity: Quantity = 1
    amount_minor: MinorAmount = 0
    price_minor: PositiveMinorAmount = 1
    currency: CurrencyCode = "EUR"
    country_code: CountryCode = "DE"
    reason: ReasonText = "because"


def _error(**values: Any) -> str:
    """The message of the single validation error raised for `values`."""
    with pytest.raises(ValidationError) as info:
        Sample(**values)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    assert errors[0]["loc"] == (next(iter(values)),)
    return str(errors[0]["msg"])


def test_valid_values_pass() -> None:
    sample = Sample(
        sku="A",
        quantity=10_000,
        amount_minor=10**12,
        price_minor=10**12,
        currency="JPY",
        country_code="GB",
        reason="x" * 500,
    )
    assert sample.sku == "A"
    assert Sample(sku="AB-12.3_X" + "9" * 55).sku.startswith("AB")


@pytest.mark.parametrize("code", ["XYZ", "ABC"])
def test_unknown_currency_names_the_code(code: str) -> None:
    assert _error(currency=code) == f"'{code}' is not an ISO-4217 currency code"


@pytest.mark.parametrize("code", ["eur", "EURO", "", "E1R"])
def test_malformed_currency(code: str) -> None:
    assert "is not an ISO-4217 currency code" in _error(currency=code)


def test_currency_must_be_a_string() -> None:
    assert _error(currency=978) == "Input should be a valid string"


@pytest.mark.parametrize("code", ["XX", "de", "DEU", ""])
def test_bad_country(code: str) -> None:
    assert _error(country_code=code) == f"'{code}' is not an ISO-3166 alpha-2 country code"


@pytest.mark.parametrize("sku", ["", "sku-1", "SKU 1", "-SKU", "SKU/1", "S" * 65])
def test_bad_sku(sku: str) -> None:
    message = _error(sku=sku)
    assert message.startswith(f"'{sku}' is not a valid SKU")
    assert "A-Z, 0-9" in message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "Input should be greater than or equal to 1"),
        (-3, "Input should be greater than or equal to 1"),
        (10_001, "Input should be less than or equal to 10000"),
        (True, "Input should be a valid integer"),
        (False, "Input should be a valid integer"),
        (1.5, "Input should be a valid integer"),
        (2.0, "Input should be a valid integer"),
        ("2", "Input should be a valid integer"),
    ],
)
def test_bad_quantity(value: object, message: str) -> None:
    assert _error(quantity=value) == message


@pytest.mark.parametrize(
    "payload", ['{"quantity": true}', '{"quantity": 1.5}', '{"quantity": "1"}']
)
def test_json_quantity_must_be_an_integer(payload: str) -> None:
    with pytest.raises(ValidationError, match="Input should be a valid integer"):
        Sample.model_validate_json(payload)


def test_money_amounts() -> None:
    assert _error(amount_minor=-1) == "Input should be greater than or equal to 0"
    assert _error(price_minor=0) == "Input should be greater than or equal to 1"
    assert _error(amount_minor=10**12 + 1).startswith("Input should be less than or equal to")
    assert _error(amount_minor=True) == "Input should be a valid integer"
    assert _error(price_minor=9.99) == "Input should be a valid integer"


def test_reason_text_length() -> None:
    assert _error(reason="") == "String should have at least 1 character"
    assert _error(reason="x" * 501) == "String should have at most 500 characters"


def test_errors_read_well_in_the_exception_text() -> None:
    with pytest.raises(ValidationError) as info:
        Sample(currency="XYZ", sku="bad sku", quantity=True)
    text = str(info.value)
    assert "3 validation errors for Sample" in text
    assert "'XYZ' is not an ISO-4217 currency code" in text
    assert "'bad sku' is not a valid SKU" in text
