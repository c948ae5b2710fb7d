"""Cells from their PostgreSQL text form to Python values, chosen by type OID.

The client asks the endpoint for raw text so nothing is lost on the way (int8 and
numeric stay exact): int2/4/8 and oid to `int`, numeric to `Decimal`, float4/8 to `float`
(NaN and infinities included), bool, text types to `str`, uuid to `UUID`, date and
timestamp to `date`/`datetime` (aware for timestamptz), interval to `timedelta`
(a month counted as 30 days and a year as 365, as psycopg does), json/jsonb parsed,
bytea to `bytes`, arrays of any of these to (nested) lists. Other types stay strings,
as do the special values `infinity` and `-infinity` of dates and timestamps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

Decoder = Callable[[str], Any]


def _bool(text: str) -> bool:
    return text == "t"


def _date(text: str) -> date | str:
    try:
        return date.fromisoformat(text)
    except ValueError:  # infinity, BC dates, years past 9999
        return text


def _timestamp(text: str) -> datetime | str:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return text


def _bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    raise ValueError("bytea in escape format; set bytea_output = 'hex'")


_INTERVAL = re.compile(
    r"(?:(?P<years>[+-]?\d+) years? ?)?"
    r"(?:(?P<months>[+-]?\d+) mons? ?)?"
    r"(?:(?P<days>[+-]?\d+) days? ?)?"
    r"(?:(?P<sign>[+-])?(?P<hours>\d+):(?P<minutes>\d\d):(?P<seconds>\d\d(?:\.\d+)?))?\Z"
)


def _interval(text: str) -> timedelta:
    found = _INTERVAL.match(text)
    if found is None or not text:
        raise ValueError(f"unsupported interval text {text!r} (IntervalStyle must be postgres)")
    parts = found.groupdict()
    days = int(parts["years"] or 0) * 365 + int(parts["months"] or 0) * 30 + int(parts["days"] or 0)
    clock = timedelta(
        hours=int(parts["hours"] or 0),
        minutes=int(parts["minutes"] or 0),
        seconds=float(parts["seconds"] or 0),
    )
    return timedelta(days=days) + (-clock if parts["sign"] == "-" else clock)


SCALARS: dict[int, Decoder] = {
    16: _bool,
    20: int,
    21: int,
    23: int,
    26: int,
    700: float,
    701: float,
    1700: Decimal,
    25: str,
    1043: str,
    1042: str,
    19: str,
    2950: UUID,
    1082: _date,
    1114: _timestamp,
    1184: _timestamp,
    1186: _interval,
    114: json.loads,
    3802: json.loads,
    17: _bytea,
}
# array type OID -> element type OID
ARRAYS: dict[int, int] = {
    1000: 16,
    1016: 20,
    1005: 21,
    1007: 23,
    1028: 26,
    1021: 700,
    1022: 701,
    1231: 1700,
    1009: 25,
    1015: 1043,
    1014: 1042,
    1003: 19,
    2951: 2950,
    1182: 1082,
    1115: 1114,
    1185: 1184,
    1187: 1186,
    199: 114,
    3807: 3802,
    1001: 17,
}


def decoder_for(type_oid: int) -> Decoder:
    """The function turning a non-null text cell of this type into a Python value."""
    element = ARRAYS.get(type_oid)
    if element is not None:
        element_decoder = SCALARS.get(element, str)
        return lambda text: parse_array(text, element_decoder)
    return SCALARS.get(type_oid, str)


def parse_array(text: str, decode: Decoder) -> list[Any]:
    """Nested lists from PostgreSQL's array text form, e.g. `{1,NULL,"a b",{2}}`."""
    if text.startswith("["):  # explicit bounds such as [0:1]={7,8}
        text = text[text.index("=") + 1 :]
    position = 0

    def parse_list() -> list[Any]:
        nonlocal position
        if text[position] != "{":
            raise ValueError(f"malformed array literal {text!r}")
        position += 1
        items: list[Any] = []
        if text[position] == "}":
            position += 1
            return items
        while True:
            items.append(parse_item())
            separator = text[position]
            position += 1
            if separator == "}":
                return items
            if separator != ",":
                raise ValueError(f"malformed array literal {text!r}")

    def parse_item() -> Any:
        nonlocal position
        if text[position] == "{":
            return parse_list()
        if text[position] == '"':
            chars: list[str] = []
            position += 1
            while text[position] != '"':
                if text[position] == "\\":
                    position += 1
                chars.append(text[position])
                position += 1
            position += 1
            return decode("".join(chars))
        start = position
        while text[position] not in ",}":
            position += 1
        raw = text[start:position]
        return None if raw == "NULL" else decode(raw)

    result = parse_list()
    if position != len(text):
        raise ValueError(f"trailing characters in array literal {text!r}")
    return result
