"""The canonical key of a phone number: what do-not-call checks and per-list uniqueness compare.

A lead keeps its `phone` as given (normalised: formatting characters dropped,
see `validation.normalize_phone`); beside it the lead stores `phone_key`, the
number in E.164 as the `phonenumbers` library reads it with the account's
`country` as the default region (the way `a2` is computed for call events).
So `212-555-0100`, `(212) 555-0100`, `12125550100` and `+12125550100` are one
number in a US account. A number the library cannot parse, or whose length is
not possible for its country (a 7-digit local US number, a short code), is
keyed by its digits alone, so it still matches itself written with or
without `+` and formatting.

`phonenumbers.parse` costs ~12 us a number, over a second per 100,000-lead
import, so `phone_key` first tries a fast path that reproduces the library's
answer for the common shapes (a `+` number, or a national number of the
default region with no prefix to strip) from its metadata, and only falls to
the library (cached per distinct number) otherwise. `tests/leads/test_leads.py`
checks the fast path against the library on random numbers of every region.
"""
from __future__ import annotations

import re
from functools import cache, lru_cache

import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, ValidationResult

_POSSIBLE = ValidationResult.IS_POSSIBLE
_E164 = phonenumbers.PhoneNumberFormat.E164
_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' bounds on a national significant number


def digits_key(phone: str) -> str:
    """The fallback key: the digits alone."""
    return phone.lstrip("+")


@lru_cache(maxsize=65536)
def slow_key(phone: str, region: str) -> str:
    """The key as the `phonenumbers` library computes it (`phone` is a normalised number: digits, optional +)."""
    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return digits_key(phone)
    if phonenumbers.is_possible_number_with_reason(parsed) != _POSSIBLE:
        return digits_key(phone)
    return phonenumbers.format_number(parsed, _E164)


class _Country:
    """What the fast path needs of one calling code's metadata (its main region's)."""

    __slots__ = ("code", "lengths", "national_prefix")

    def __init__(self, code: int, metadata: PhoneMetadata) -> None:
        self.code = str(code)
        prefix = metadata.national_prefix_for_parsing
        self.national_prefix = re.compile(prefix).match if prefix else None
        general = metadata.general_desc
        lengths = general.possible_length if general is not None else ()
        local = set(general.possible_length_local_only or ()) if general is not None else set()
        # IS_POSSIBLE exactly: a possible length that is not a local-only one
        self.lengths = frozenset(n for n in lengths if n > 0 and n not in local)


@cache
def _country(code: int) -> _Country | None:
    regions = COUNTRY_CODE_TO_REGION_CODE.get(code)
    if not regions:
        return None
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, regions[0])
    return _Country(code, metadata) if metadata is not None else None


@cache
def _region(region: str) -> tuple[_Country, object, object] | None:
    """(country, national-prefix matcher, international-prefix matcher) of a default region."""
    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.country_code is None:
        return None
    country = _country(metadata.country_code)
    if country is None:
        return None
    prefix = metadata.national_prefix_for_parsing
    idd = metadata.international_prefix
    return country, (re.compile(prefix).match if prefix else None), (re.compile(idd).match if idd else None)


# calling codes as text ("1", "44", "972"): no calling code is a prefix of another
_CODES = {str(code): code for code in COUNTRY_CODE_TO_REGION_CODE}


def _fast_key(phone: str, region: str) -> str | None:
    """The library's key without the library, or None when only the library can tell."""
    if phone[0] == "+":
        # the library takes the first of 1, 2, 3 leading digits that is a calling code
        size = 1 if phone[1:2] in _CODES else 2 if phone[1:3] in _CODES else 3 if phone[1:4] in _CODES else 0
        if not size or len(phone) <= 3 or phone[1] == "0":
            return None
        country = _country(_CODES[phone[1:1 + size]])
        national = phone[1 + size:]
        if country is None:
            return None
        if national and country.national_prefix is not None and country.national_prefix(national):
            return None
    else:
        found = _region(region)
        if found is None:
            return None
        country, national_prefix, idd = found
        national = phone
        # An international prefix (011 in the US), the country code itself, or a national prefix to strip:
        # the library decides.
        if phone.startswith(country.code) or (idd is not None and idd(phone)) or (
                national_prefix is not None and national_prefix(phone)):
            return None
    if not _MIN_NSN <= len(national) <= _MAX_NSN or len(national) not in country.lengths:
        return None
    return "+" + country.code + national


def phone_key(phone: str, region: str | None) -> str:
    """The canonical key of a normalised phone number for an account whose country is `region`."""
    region = (region or "US").upper()
    key = _fast_key(phone, region)
    return key if key is not None else slow_key(phone, region)


def phone_keys(phones: list[str], region: str | None) -> list[str]:
    """`phone_key` of each phone (a batch of an import)."""
    region = (region or "US").upper()
    fast = _fast_key
    out = []
    append = out.append
    for phone in phones:
        key = fast(phone, region)
        append(key if key is not None else slow_key(phone, region))
    return out
