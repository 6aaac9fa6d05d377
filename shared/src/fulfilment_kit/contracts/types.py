"""Reusable constrained field types of the public event contract (pydantic v2 `Annotated`)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Annotated, Any

import pycountry
from pydantic import (
    AfterValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "SKU_PATTERN",
    "CarrierName",
    "CountryCode",
    "CurrencyCode",
    "InputCountryCode",
    "InputCurrencyCode",
    "InputName",
    "InputReasonText",
    "MinorAmount",
    "NoControlCharacters",
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
    # Every event's payload is checked on decode: a set, not pycountry's lookup per value.
    if not _CURRENCY_RE.fullmatch(value) or value not in _CURRENCY_CODES:
        raise PydanticCustomError(
            "currency_code", "'{value}' is not an ISO-4217 currency code", {"value": value}
        )
    return value


def _check_country(value: str) -> str:
    if not _COUNTRY_RE.fullmatch(value) or value not in _COUNTRY_CODES:
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


# --- request-side types: what the API accepts from now on -------------------------------------
# The event types above stay as they were: records already on the topics must keep decoding
# (see docs/adr). Requests are stricter: no control characters, only chargeable currencies.

_CONTROL_MULTILINE = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff"
_CONTROL_SINGLE_LINE = "\x00-\x1f\x7f-\x9f\ud800-\udfff"
_CONTROL_RE = {
    True: re.compile(f"[{_CONTROL_MULTILINE}]"),
    False: re.compile(f"[{_CONTROL_SINGLE_LINE}]"),
}
# The JSON Schema (ECMA-262) patterns, also used by the server (Python's `re` reads the same
# escapes), so that the OpenAPI and the validation agree exactly: no control characters and,
# unless blanks are allowed, a visible character after at most some leading blanks.
_CONTROLS = {
    True: r"\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F",
    False: r"\u0000-\u001F\u007F-\u009F",
}
_LEADING_BLANKS = {True: r"[\t\n\r ]*", False: r"[ ]*"}


def _text_pattern(multiline: bool, blank: bool) -> str:
    controls = _CONTROLS[multiline]
    if blank:
        return rf"^[^{controls}]*$"
    return rf"^{_LEADING_BLANKS[multiline]}[^\s{controls}][^{controls}]*$"


@dataclass(frozen=True)
class NoControlCharacters:
    """`Annotated` metadata of a free-text request field: refuses control characters (NUL,
    escapes, DEL, C1, lone surrogates; `multiline` allows tab, CR and LF) and, unless `blank`,
    text without a visible character. Documented in the JSON Schema as the same `pattern`."""

    multiline: bool = False
    blank: bool = False

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = _text_pattern(self.multiline, self.blank)
        return json_schema

    def _check(self, value: str) -> str:
        found = _CONTROL_RE[self.multiline].search(value)
        if found is not None:
            raise PydanticCustomError(
                "control_characters",
                "must not contain control characters{allowed}: found U+{code} at position "
                "{position}",
                {
                    "allowed": " (tab and newline are allowed)" if self.multiline else "",
                    "code": f"{ord(found.group()):04X}",
                    "position": found.start(),
                },
            )
        if _pattern(self.multiline, self.blank).fullmatch(value) is None:
            raise PydanticCustomError(
                "blank_text",
                "must contain a visible character (after at most leading spaces{newlines})",
                {"newlines": ", tabs and newlines" if self.multiline else ""},
            )
        return value


@functools.cache
def _pattern(multiline: bool, blank: bool) -> re.Pattern[str]:
    return re.compile(_text_pattern(multiline, blank))


InputReasonText = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=500),
    NoControlCharacters(multiline=True),
]
"""A reason, note or summary in a request: 1 to 500 characters, no control characters."""

InputName = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=200), NoControlCharacters()
]
"""A person's or agent's name in a request: 1 to 200 characters on one line."""

# ISO 4217 codes that are not money a shop can charge: precious metals, bond-market units,
# SDRs and the like, the testing and "no currency" codes, and fund codes.
NON_CURRENCY_CODES = frozenset(
    {
        "XAG", "XAU", "XPD", "XPT",  # metals
        "XBA", "XBB", "XBC", "XBD",  # bond-market units
        "XDR", "XSU", "XUA",  # SDR, Sucre, ADB unit of account
        "XTS", "XXX",  # testing, no currency
        "BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW",  # funds
    }
)  # fmt: skip
CHARGEABLE_CURRENCIES: tuple[str, ...] = tuple(
    sorted(c.alpha_3 for c in pycountry.currencies if c.alpha_3 not in NON_CURRENCY_CODES)
)
COUNTRY_CODES: tuple[str, ...] = tuple(sorted(c.alpha_2 for c in pycountry.countries))
_CURRENCY_CODES = frozenset(c.alpha_3 for c in pycountry.currencies)
_COUNTRY_CODES = frozenset(COUNTRY_CODES)
_CHARGEABLE = frozenset(CHARGEABLE_CURRENCIES)


def _check_chargeable_currency(value: str) -> str:
    _check_currency(value)
    if value not in _CHARGEABLE:
        raise PydanticCustomError(
            "currency_code",
            "'{value}' is an ISO-4217 code for no money a customer can pay in "
            "(a test, metal, fund or accounting unit)",
            {"value": value},
        )
    return value


InputCurrencyCode = Annotated[
    str,
    Strict(),
    AfterValidator(_check_chargeable_currency),
    WithJsonSchema({"type": "string", "enum": list(CHARGEABLE_CURRENCIES)}),
]
"""A currency a customer can pay in: ISO 4217, without the test, metal and fund codes."""

InputCountryCode = Annotated[
    str,
    Strict(),
    AfterValidator(_check_country),
    WithJsonSchema({"type": "string", "enum": list(COUNTRY_CODES)}),
]
"""An ISO-3166-1 alpha-2 country code in a request, listed as an enum in the OpenAPI."""
