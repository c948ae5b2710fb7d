"""Shared bounds and value strategies for the property tests.

`./dev test` runs a bounded number of examples; set FUZZ_EXAMPLES (and optionally
FUZZ_SEED for schemathesis) for a longer run on demand, e.g.
`FUZZ_EXAMPLES=2000 ./dev test -k "propert or conformance"`.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0")) or None


def examples(bounded: int) -> int:
    """`bounded` in the test run, FUZZ_EXAMPLES when asked for more."""
    return EXAMPLES or bounded


# Every kind of text JSON can carry, lone surrogates and NUL included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
any_number = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), any_number, any_text)


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Any value Python's json module can write, NaN and infinities included."""
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(any_text, inner, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def deep(depth: int) -> Any:
    """Arrays nested `depth + 1` levels: deep(0) is `[]`, deep(1) is `[[]]`."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value
