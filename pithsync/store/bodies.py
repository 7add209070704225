"""How the store keeps a body (a document, an event, a merged state, a bad copy): compressed
with zstd and a dictionary trained on Pith documents, and given back as the exact bytes.

    compress(body) -> blob              a zstd frame that names its dictionary
    expand(blob, sha256=None) -> body   the exact bytes, checked, or StoreError
    compress_statements(statements) -> blob, expand_statements(blob, count) -> statements:
                                        the observation log's leaves, a record check's together

Every blob is one zstd frame that carries, in its header, the id of the dictionary it was
compressed with (zstd's own Dictionary_ID field, 0 for none), its content size and a checksum of
its content.  The dictionaries are files shipped with the package (pithsync/data/zstd/), each
pinned here by id and sha256: a new dictionary is added beside the old ones under a new id and
never replaces one, so that every blob ever written stays readable.  `python -m
bench.zstd_dictionary` trains one from the forge's documents and the seeds.

Reading never gives back other bytes than were stored: the frame's checksum must hold and, where
the caller knows the body's sha256 (documents, evidence), the expanded bytes must hash to it;
anything else (an edited or truncated row, an unknown dictionary) raises StoreError.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from importlib import resources

import zstandard

from pithsync.base.exits import StoreError
from pithsync.core.observation import MAX_STATEMENT_BYTES

# dictionary id -> (file under pithsync/data/zstd, its sha256).  Only ever add to this.
DICTIONARIES = {
    0x70697431: ("pith-1.dict", "4096fa4dec3ac8bb4a6325222c1f90a591a1fb88f54eace56e777ef05a6aeb66"),
    0x70697432: (
        "statements-1.dict",
        "0cd2f6adc5c5e7245f819f16b2f1b39c069267584559a488af8b595cb69041c6",
    ),
}
CURRENT = 0x70697431  # the dictionary new bodies are compressed with
STATEMENTS = 0x70697432  # the one new observation statements are compressed with
LEVEL = 9  # zstd level: on these documents higher levels gain under 3% and cost writer CPU
# Statements: level 1 (level 9 saved 4% with the documents dictionary at five times the CPU;
# level 3 saves nothing with theirs: bench/README.md).
STATEMENT_LEVEL = 1
MAX_BODY = 64 * 1024 * 1024  # no body larger is ever stored (the fetcher's cap)


@functools.cache
def dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    """The shipped dictionary `dict_id`, checked against its pinned sha256.

    Raises:
        StoreError: no such dictionary is shipped, or its file is not the pinned one.
    """
    if dict_id not in DICTIONARIES:
        raise StoreError(f"a stored body names zstd dictionary {dict_id:#x}, which is not shipped")
    name, sha256 = DICTIONARIES[dict_id]
    data = resources.files("pithsync").joinpath("data", "zstd", name).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StoreError(f"zstd dictionary {name} does not match its pinned sha256")
    return zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)


@functools.cache
def _compressor(level: int, dict_id: int) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(
        level=level,
        dict_data=dictionary(dict_id),
        write_checksum=True,
        write_content_size=True,
        write_dict_id=True,
    )


@functools.cache
def _decompressor(dict_id: int) -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor(dict_data=dictionary(dict_id) if dict_id else None)


def compress(body: bytes | str) -> bytes:
    """The blob to store for `body` (text is stored as its UTF-8 bytes)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return _compressor(LEVEL, CURRENT).compress(body)


def compress_statements(statements: Sequence[bytes]) -> bytes:
    """The blob to store for consecutive observation statements (one record check's): one
    frame, with their own dictionary and level, of each statement as a big-endian uint16
    length and its bytes (a tlog-tiles entry bundle's framing).

    Raises:
        ValueError: a statement is longer than a uint16 length can say.
    """
    if any(len(s) > MAX_STATEMENT_BYTES for s in statements):
        raise ValueError(f"an observation statement is over {MAX_STATEMENT_BYTES} bytes")
    framed = b"".join(len(s).to_bytes(2, "big") + s for s in statements)
    return _compressor(STATEMENT_LEVEL, STATEMENTS).compress(framed)


def expand_statements(blob: bytes, count: int) -> list[bytes]:
    """The exact statements a `compress_statements` blob holds.

    Raises:
        StoreError: the blob is corrupt (see `expand`) or does not hold exactly `count`
            statements.
    """
    framed, statements, at = expand(blob), [], 0
    while at < len(framed) and len(statements) < count:
        end = at + 2 + int.from_bytes(framed[at : at + 2], "big")
        if end > len(framed):
            break
        statements.append(framed[at + 2 : end])
        at = end
    if len(statements) != count or at != len(framed):
        raise StoreError(f"a stored body is corrupt: it does not hold {count} statements")
    return statements


def expand(blob: bytes, sha256: str | None = None) -> bytes:
    """The exact bytes a blob holds.

    Args:
        blob: what `compress` gave.
        sha256: the hex sha256 the bytes must have, when the caller knows it.

    Raises:
        StoreError: the blob is not a whole frame, names an unknown dictionary, fails its
            checksum, or expands to bytes of another sha256.
    """
    try:
        params = zstandard.get_frame_parameters(blob)
        if params.content_size > MAX_BODY or not params.has_checksum:
            raise zstandard.ZstdError("frame without a checksum, or larger than any body")
        body = _decompressor(params.dict_id).decompress(blob, max_output_size=MAX_BODY)
    except (zstandard.ZstdError, TypeError, ValueError) as exc:
        raise StoreError(f"a stored body is corrupt: {exc}") from None
    if sha256 is not None and hashlib.sha256(body).hexdigest() != sha256:
        raise StoreError(f"a stored body does not match its sha256 {sha256[:16]}...")
    return body


def expand_text(blob: bytes) -> str:
    """A stored text body (an event's or a state's canonical JSON) as text."""
    return expand(blob).decode("utf-8")
