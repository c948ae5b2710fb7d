"""Conversions between JSON values and PostgreSQL text, in both directions.

Parameters arrive as JSON and go to Postgres as untyped text (Postgres infers their
types). Cells come back from Postgres as text; in JSON mode a few types become native
JSON values, everything else stays a string (see PROTOCOL.md, "Response").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# Cells that become native JSON values; every other type stays a string.
# (Builtin type OIDs are fixed: pg_type.dat in Postgres's source.)
_BOOL = 16
_INTEGERS = {21, 23}  # int2, int4
_FLOATS = {700, 701}  # float4, float8
_JSON = {114, 3802}  # json, jsonb
_NON_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})

# Builtin array type OID -> element type OID. Arrays of types Postgres does not ship
# (arrays of enums, domains, composites) are left as their text form.
# fmt: off
ARRAY_ELEMENT: dict[int, int] = {
    143: 142, 199: 114, 271: 5069, 629: 628, 651: 650, 719: 718, 775: 774, 791: 790, 1000: 16,
    1001: 17, 1002: 18, 1003: 19, 1005: 21, 1006: 22, 1007: 23, 1008: 24, 1009: 25, 1010: 27,
    1011: 28, 1012: 29, 1013: 30, 1014: 1042, 1015: 1043, 1016: 20, 1017: 600, 1018: 601,
    1019: 602, 1020: 603, 1021: 700, 1022: 701, 1027: 604, 1028: 26, 1034: 1033, 1040: 829,
    1041: 869, 1115: 1114, 1182: 1082, 1183: 1083, 1185: 1184, 1187: 1186, 1231: 1700,
    1270: 1266, 1561: 1560, 1563: 1562, 2201: 1790, 2207: 2202, 2208: 2203, 2209: 2204,
    2210: 2205, 2211: 2206, 2287: 2249, 2949: 2970, 2951: 2950, 3221: 3220, 3643: 3614,
    3644: 3642, 3645: 3615, 3735: 3734, 3770: 3769, 3807: 3802, 3905: 3904, 3907: 3906,
    3909: 3908, 3911: 3910, 3913: 3912, 3927: 3926, 4073: 4072, 4090: 4089, 4097: 4096,
    4192: 4191, 6150: 4451, 6151: 4532, 6152: 4533, 6153: 4534, 6155: 4535, 6157: 4536,
}
# fmt: on

ParamValue = None | bool | int | float | str | list[Any] | dict[str, Any]
MAX_ARRAY_DIMENSIONS = 6  # PostgreSQL's own limit (MAXDIM)


class InvalidParameter(ValueError):
    """Raised when a JSON parameter cannot be expressed as PostgreSQL text."""


def param_to_text(value: ParamValue) -> str | None:
    """One JSON parameter as the untyped text Postgres receives; None stays NULL."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if type(value) is int:  # what JSON.stringify writes, without json.dumps's encoder
        return str(value)
    if isinstance(value, list):
        return _array_literal(value)
    try:
        return _json_text(value)
    except RecursionError:
        raise InvalidParameter("the parameter is nested too deeply") from None


def _json_text(value: Any) -> str:
    # Compact, as JavaScript's JSON.stringify writes it.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _array_literal(items: list[Any], depth: int = 1) -> str:
    if depth > MAX_ARRAY_DIMENSIONS:
        raise InvalidParameter(
            f"arrays have at most {MAX_ARRAY_DIMENSIONS} dimensions in PostgreSQL"
        )
    return "{" + ",".join(_array_element(item, depth) for item in items) + "}"


def _array_element(item: Any, depth: int) -> str:
    if item is None:
        return "NULL"
    if isinstance(item, list):
        return _array_literal(item, depth + 1)
    try:
        text = item if isinstance(item, str) else _json_text(item)
    except RecursionError:
        raise InvalidParameter("an array element is nested too deeply") from None
    return _quote_array_element(text)


_NEEDS_QUOTES = frozenset('{},"\\ \t\n\r\v\f')


def _quote_array_element(text: str) -> str:
    if text and text.upper() != "NULL" and not any(ch in _NEEDS_QUOTES for ch in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def cell_converter(type_oid: int) -> Callable[[str], Any] | None:
    """The function turning a non-null text cell of this type into its JSON value.

    None means the text itself is the JSON value (a string), which lets callers skip
    the per-cell call for most columns.
    """
    element = ARRAY_ELEMENT.get(type_oid)
    if element is not None:
        convert_element = _scalar_converter(element)
        return lambda text: parse_array(text, convert_element)
    return _scalar_converter(type_oid)


def _scalar_converter(type_oid: int) -> Callable[[str], Any] | None:
    if type_oid == _BOOL:
        return _bool
    if type_oid in _INTEGERS:
        return int
    if type_oid in _FLOATS:
        return _float
    if type_oid in _JSON:
        return json.loads
    return None


def _bool(text: str) -> bool:
    return text == "t"


def _float(text: str) -> float | str:
    return text if text in _NON_FINITE else float(text)


class _ArrayParser:
    """Reads PostgreSQL's array text form: `{1,NULL,"a b",{2,3}}`, with optional
    `[lower:upper]=` dimension decoration, into nested lists."""

    def __init__(self, text: str, convert: Callable[[str], Any] | None) -> None:
        self.text = text
        self.pos = 0
        self.convert = convert

    def parse(self) -> list[Any]:
        if self.text.startswith("["):
            self.pos = self.text.index("=") + 1
        result = self._array()
        if self.pos != len(self.text):
            raise ValueError(f"trailing characters in array literal {self.text!r}")
        return result

    def _array(self) -> list[Any]:
        self._expect("{")
        items: list[Any] = []
        if self._peek() == "}":
            self.pos += 1
            return items
        while True:
            items.append(self._element())
            ch = self._peek()
            self.pos += 1
            if ch == "}":
                return items
            if ch != ",":
                raise ValueError(f"malformed array literal {self.text!r}")

    def _element(self) -> Any:
        ch = self._peek()
        if ch == "{":
            return self._array()
        if ch == '"':
            return self._converted(self._quoted())
        start = self.pos
        while self.text[self.pos] not in ",}":
            self.pos += 1
        raw = self.text[start : self.pos]
        return None if raw == "NULL" else self._converted(raw)

    def _quoted(self) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            ch = self.text[self.pos]
            if ch == "\\":
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif ch == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(ch)
                self.pos += 1

    def _converted(self, raw: str) -> Any:
        return raw if self.convert is None else self.convert(raw)

    def _peek(self) -> str:
        return self.text[self.pos]

    def _expect(self, ch: str) -> None:
        if self._peek() != ch:
            raise ValueError(f"malformed array literal {self.text!r}")
        self.pos += 1


def parse_array(text: str, convert: Callable[[str], Any] | None = None) -> list[Any]:
    """Nested lists from an array's text form; `convert` maps each non-null element."""
    return _ArrayParser(text, convert).parse()
