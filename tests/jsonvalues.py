"""hypothesis strategies for JSON values, shared by the canonical-encoder and strict-parser
tests."""

from __future__ import annotations

from hypothesis import strategies as st

# Text over the whole code space (non-BMP included) but never a lone surrogate.
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
# Ints strictjson will read back (<= MAX_NUMBER_CHARS characters), including huge ones.
BIG = 10**63 - 1
INTS = st.integers(min_value=-BIG, max_value=BIG) | st.sampled_from(
    [0, -1, 2**53, 2**53 + 1, 2**64, -(2**63), BIG, -BIG]
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, 0.1]
)
SCALARS = st.none() | st.booleans() | INTS | FLOATS | TEXT
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=25,
)
