"""Pith numbers: `pith:YYYY:<26 base32 chars>`, bare suffixes, and short forms."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from pithsync.core.canonical import canon_sha256
from pithsync.core.errors import InvalidPithNumber

SUFFIX_LEN = 26
SHORT_LEN = 8
_B32 = "[A-Z2-7]"
_FULL = re.compile(rf"^pith:([0-9]{{4}}):({_B32}{{{SUFFIX_LEN}}})\Z")
_BARE = re.compile(rf"^({_B32}{{{SUFFIX_LEN}}})\Z")
# Short forms name a prefix of the suffix: pith:XXXXXXXX, or the 8/12/16-char aliases.
_SHORT = re.compile(rf"^(?:pith:)?({_B32}{{8}}|{_B32}{{12}}|{_B32}{{16}})\Z")


@dataclass(frozen=True, order=True)
class PithNumber:
    year: int
    suffix: str

    def __str__(self) -> str:
        return f"pith:{self.year:04d}:{self.suffix}"

    @property
    def short(self) -> str:
        return f"pith:{self.suffix[:SHORT_LEN]}"


@dataclass(frozen=True)
class PithRef:
    """What a user typed: a full number, a bare suffix (year unknown), or a short prefix."""

    suffix: str  # the 26 characters, or a shorter prefix when `is_prefix`
    year: int | None = None
    is_prefix: bool = False


def parse_full(text: str) -> PithNumber:
    # Exact: a number inside a signed document must be written canonically, not merely parse.
    m = _FULL.match(text) if isinstance(text, str) else None
    if not m:
        raise InvalidPithNumber(
            f"not a full pith number (pith:YYYY:{SUFFIX_LEN} base32 chars): {str(text)[:80]!r}"
        )
    return PithNumber(int(m.group(1)), m.group(2))


def parse_ref(text: str) -> PithRef:
    """Parse any accepted written form; raise InvalidPithNumber for anything else."""
    if not isinstance(text, str):
        raise InvalidPithNumber("pith number must be a string")
    t = text.strip()
    if m := _FULL.match(t):
        if int(m.group(1)) == 0:
            # No record is submitted in year 0: refused, never taken as "year unknown".
            raise InvalidPithNumber(f"not a pith number: {t[:80]!r} (year 0000 is no one's year)")
        return PithRef(m.group(2), int(m.group(1)))
    if m := _BARE.match(t):
        return PithRef(m.group(1))
    if m := _SHORT.match(t):
        return PithRef(m.group(1), is_prefix=True)
    raise InvalidPithNumber(
        f"not a pith number: {t[:80]!r} "
        "(expected pith:YYYY:<26 chars>, a bare 26-char suffix, or pith:<8 chars>)"
    )


def suffix_of(pith_number: str) -> str:
    """The suffix a stored number carries: what follows its last colon (a number typed without
    its year was once stored as the bare suffix, which is returned as it is)."""
    return pith_number.rpartition(":")[2]


def suffix_from_sha256(canonical_sha256: str) -> str:
    """The first 26 characters of the RFC 4648 base32 of the 32 digest bytes."""
    return base64.b32encode(bytes.fromhex(canonical_sha256)).decode("ascii")[:SUFFIX_LEN]


def year_of(canonical_record: dict) -> int:
    # Inferred (PROTOCOL.md): the year of metadata.submitted_at.
    submitted = canonical_record["metadata"]["submitted_at"]
    if not (isinstance(submitted, str) and re.match(r"^[0-9]{4}-", submitted)):
        raise InvalidPithNumber(f"canonical record has no usable submitted_at: {submitted!r}")
    return int(submitted[:4])


def derive(canonical_record: dict) -> PithNumber:
    return PithNumber(year_of(canonical_record), suffix_from_sha256(canon_sha256(canonical_record)))


PITH_IN_TEXT = re.compile(rf"pith:[0-9]{{4}}:{_B32}{{{SUFFIX_LEN}}}(?!{_B32})")


def find_in(value: object) -> set[str]:
    """Every full pith number mentioned anywhere in a (verified) JSON value."""
    found: set[str] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "pith:" in node:
                found.update(PITH_IN_TEXT.findall(node))
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found
