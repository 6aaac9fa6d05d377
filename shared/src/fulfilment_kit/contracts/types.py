"""Reusable constrained field types of the public event contract (pydantic v2 `Annotated`)."""

from __future__ import annotations

import re
from typing import Annotated

import pycountry
from pydantic import AfterValidator, Field, Strict, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "SKU_PATTERN",
    "CarrierName",
    "CountryCode",
    "CurrencyCode",
    "MinorAmount",
    "PaymentToken",
    "PositiveMinorAmount",
    "Quantity",
    "ReasonText",
    "RmaNumber",
    "Sku",
    "StockCount",
    "TrackingNumber",
]

SKU_PATTERN = r"^[A-Z0-9][A-Z0-9._-]{0,63}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"

_SKU_RE = re.compile(SKU_PATTERN)
_CURRENCY_RE = re.compile(CURRENCY_PATTERN)
_COUNTRY_RE = re.compile(COUNTRY_PATTERN)


def _check_sku(value: str) -> str:
    if not _SKU_RE.fullmatch(value):
        raise PydanticCustomError(
            "sku",
            "'{value}' is not a valid SKU: 1-64 characters from A-Z, 0-9, '.', '_', '-', "
            "starting with a letter or digit",
            {"value": value},
        )
    return value


def _check_currency(value: str) -> str:
    if not _CURRENCY_RE.fullmatch(value) or pycountry.currencies.get(alpha_3=value) is None:
        raise PydanticCustomError(
            "currency_code", "'{value}' is not an ISO-4217 currency code", {"value": value}
        )
    return value


def _check_country(value: str) -> str:
    if not _COUNTRY_RE.fullmatch(value) or pycountry.countries.get(alpha_2=value) is None:
        raise PydanticCustomError(
            "country_code", "'{value}' is not an ISO-3166 alpha-2 country code", {"value": value}
        )
    return value


Sku = Annotated[
    str,
    Strict(),
    AfterValidator(_check_sku),
    WithJsonSchema({"type": "string", "pattern": SKU_PATTERN}),
]
"""Stock keeping unit: upper-case letters, digits, '.', '_', '-'; at most 64 characters."""

CurrencyCode = Annotated[
    str,
    Strict(),
    AfterValidator(_check_currency),
    WithJsonSchema({"type": "string", "pattern": CURRENCY_PATTERN}),
]
"""An ISO-4217 alphabetic currency code such as EUR, checked against pycountry."""

CountryCode = Annotated[
    str,
    Strict(),
    AfterValidator(_check_country),
    WithJsonSchema({"type": "string", "pattern": COUNTRY_PATTERN}),
]
"""An ISO-3166-1 alpha-2 country code such as DE, checked against pycountry."""

Quantity = Annotated[int, Strict(), Field(ge=1, le=10_000)]
"""Units of one SKU in one line: a whole number from 1 to 10,000 (no bools, no floats)."""

StockCount = Annotated[int, Strict(), Field(ge=0, le=10**9)]
"""Units of stock on hand, reserved or available: a whole number, zero or more."""

MinorAmount = Annotated[int, Strict(), Field(ge=0, le=10**12)]
"""Money in minor units (cents), zero allowed; always paired with a CurrencyCode."""

PositiveMinorAmount = Annotated[int, Strict(), Field(ge=1, le=10**12)]
"""Money in minor units (cents), greater than zero; always paired with a CurrencyCode."""

ReasonText = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=500)]
"""Free human-readable text (a reason, a note): 1 to 500 characters."""

CarrierName = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=50)]
"""A parcel carrier as known to the shipping gateway, e.g. 'dhl'."""

TrackingNumber = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
]
"""The carrier's tracking number: letters, digits and '-'."""

PaymentToken = Annotated[
    str, Strict(), StringConstraints(min_length=5, max_length=64, pattern=r"^tok_[a-z0-9_]+$")
]
"""An opaque payment-method token issued by the payment provider, e.g. 'tok_visa'.

Personal data: never logged, never a metric label."""

RmaNumber = Annotated[str, Strict(), StringConstraints(pattern=r"^RMA-[A-Z0-9]{4,32}$")]
"""Return merchandise authorisation number, e.g. RMA-7F3K9Q."""
