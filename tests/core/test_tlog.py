"""C2SP checkpoints and tile layout (pithsync/core/tlog.py) against the specifications.

Vectors:
- c2sp.org/tlog-checkpoint (github.com/C2SP/C2SP tlog-checkpoint.md at 5ba5ee83): the
  example.com/behind-the-sofa checkpoint.
- c2sp.org/tlog-tiles (tlog-tiles.md, same commit): index 1234067 -> x001/x234/067, the tiles
  of trees of size 70,000 and 256.
- golang.org/x/mod/sumdb/tlog (github.com/golang/mod at fe2ec04f): note_test.go TestFormatTree
  and TestParseTree's bad trees; tile_test.go FuzzParseTilePath's index spellings.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pithsync.core import merkle, note, tlog
from pithsync.core.note import NoteError, NoteSigner, UnverifiedNote
from pithsync.core.tlog import Checkpoint, CheckpointError, Tile, TileError

C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhc"
    "yv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
).encode()
GO_TREE = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"
SIGNER = NoteSigner("observer.example/a", hashlib.sha256(b"test observer key").digest())


def test_the_c2sp_example_checkpoint_parses_and_reencodes_byte_for_byte():
    parsed = note.parse_note(C2SP_CHECKPOINT)
    checkpoint = tlog.parse_checkpoint(parsed.text)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert checkpoint.extensions == ()
    assert checkpoint.text() == parsed.text
    assert [s.name for s in parsed.signatures] == ["example.com/behind-the-sofa"]
    assert parsed.encode() == C2SP_CHECKPOINT


def test_the_c2sp_example_is_not_trusted_without_its_key():
    with pytest.raises(UnverifiedNote):
        tlog.open_checkpoint(C2SP_CHECKPOINT, [SIGNER.verifier_key])


def test_go_sumdb_tree_format_byte_for_byte():
    # TestFormatTree: the tree hash is RecordHash("hello world"), the RFC 6962 leaf hash.
    checkpoint = Checkpoint("go.sum database tree", 123456789012, merkle.leaf_hash(b"hello world"))
    assert checkpoint.text() == GO_TREE
    assert tlog.parse_checkpoint(GO_TREE) == checkpoint


@pytest.mark.parametrize(
    "text",
    [
        "go.sum database tree\n0xabcdef\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=\n",
        "go.sum database tree\n0123\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        "go.sum database tree\n-1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        "go.sum database tree\n+1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        "go.sum database tree\n\u0661\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        "go.sum database tree\n18446744073709551616\n"
        "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        "go.sum database tree\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0\n",
        "go.sum database tree\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb1=\n",
        "go.sum database tree\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40Hmuw\n",
        "\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        "go.sum database tree\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n\nextension\n",
        "go.sum database tree\n1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=",
        "go.sum database tree\n1\n",
    ],
    ids=[
        "hex-size",
        "bad-base64",
        "leading-zero",
        "negative",
        "plus-sign",
        "arabic-digit",
        "beyond-uint64",
        "unpadded-root",
        "non-canonical-root",
        "short-root",
        "empty-origin",
        "empty-extension",
        "no-final-newline",
        "no-root",
    ],
)
def test_bad_checkpoints_are_rejected(text):
    with pytest.raises(CheckpointError):
        tlog.parse_checkpoint(text)


def test_extension_lines_and_the_empty_tree():
    text = "log.example/x\n0\n" + base64.b64encode(merkle.EMPTY_ROOT).decode() + "\na\nb c\n"
    checkpoint = tlog.parse_checkpoint(text)
    assert checkpoint.size == 0 and checkpoint.extensions == ("a", "b c")
    assert checkpoint.text() == text


def test_a_signed_checkpoint_opens_and_its_origin_is_checked():
    checkpoint = Checkpoint("observer.example/a", 5, merkle.root([merkle.leaf_hash(b"x")] * 5))
    signed = tlog.sign_checkpoint(checkpoint, [SIGNER])
    opened, verified = tlog.open_checkpoint(signed, [SIGNER.verifier_key], "observer.example/a")
    assert opened == checkpoint and verified.signed_by == (SIGNER.verifier_key,)
    with pytest.raises(CheckpointError):
        tlog.open_checkpoint(signed, [SIGNER.verifier_key], "observer.example/b")


def test_a_signed_note_that_is_not_a_checkpoint_is_rejected():
    signed = note.sign_note("hello\n", [SIGNER])
    with pytest.raises(CheckpointError):
        tlog.open_checkpoint(signed, [SIGNER.verifier_key])
    assert issubclass(CheckpointError, NoteError)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), st.data())
def test_any_edit_of_a_signed_checkpoint_fails(size, root_hash, data):
    signed = bytearray(tlog.sign_checkpoint(Checkpoint("o.example/log", size, root_hash), [SIGNER]))
    position = data.draw(st.integers(0, len(signed) - 1))
    signed[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(NoteError):
        tlog.open_checkpoint(bytes(signed), [SIGNER.verifier_key])


@pytest.mark.parametrize(
    ("index", "encoded"),
    [
        (1234067, "x001/x234/067"),
        (0, "000"),
        (1, "001"),
        (999, "999"),
        (1000, "x001/000"),
        (123456078, "x123/x456/078"),
        (3057500, "x003/x057/500"),
    ],
)
def test_tile_index_encoding(index, encoded):
    assert tlog.encode_tile_index(index) == encoded
    assert tlog.parse_tile_path(f"tile/0/{encoded}") == Tile(0, index)


def test_tile_and_entry_paths():
    assert Tile(0, 1234067).path() == "tile/0/x001/x234/067"
    assert Tile(2, 1234067, 8).path() == "tile/2/x001/x234/067.p/8"
    assert Tile(0, 5, 17).entries_path() == "tile/entries/005.p/17"
    assert tlog.parse_tile_path("tile/2/x001/x234/067.p/8") == Tile(2, 1234067, 8)
    with pytest.raises(TileError):
        Tile(1, 0).entries_path()


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1234067",
        "tile/0/x001/234/067",
        "tile/0/001/x234",
        "tile/00/000",
        "tile/64/000",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/0/000.p/05",
        "tile/0/x000/001",
        "tile/0/00a",
        "tile/-1/000",
        "tiles/0/000",
        "tile/0",
        "tile/0/\u0661\u0662\u0663",
    ],
)
def test_non_canonical_tile_paths_are_refused(path):
    with pytest.raises(TileError):
        tlog.parse_tile_path(path)


def _layout(size: int) -> dict[int, tuple[int, int | None]]:
    """Per level: the number of full tiles and the partial tile's width (or None)."""
    out: dict[int, tuple[int, int | None]] = {}
    for tile in tlog.tiles_for_size(size):
        full, partial = out.get(tile.level, (0, None))
        out[tile.level] = (full, tile.width) if tile.is_partial else (full + 1, partial)
    return out


def test_the_c2sp_tile_layout_examples():
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level 0
    # tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and one
    # partial level 2 tile of width 1."
    assert _layout(70_000) == {0: (273, 112), 1: (1, 17), 2: (0, 1)}
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
    # tile of width 1."
    assert _layout(256) == {0: (1, None), 1: (0, 1)}
    assert tlog.tiles_for_size(0) == []


def test_tile_hashes_are_the_subtree_hashes_the_spec_defines():
    leaf_hashes = [merkle.leaf_hash(i.to_bytes(3, "big")) for i in range(256 * 3 + 5)]
    level0 = tlog.tile_hashes(leaf_hashes, Tile(0, 3, 5))
    assert level0 == b"".join(leaf_hashes[768:773])
    level1 = tlog.tile_hashes(leaf_hashes, Tile(1, 0, 3))
    expected = [merkle.root(leaf_hashes[i * 256 : (i + 1) * 256]) for i in range(3)]
    assert level1 == b"".join(expected)
    # A full level-1 tile's hashes hash (as the leaves of a subtree) to that subtree's root.
    assert merkle.root(expected[:2]) == merkle.root(leaf_hashes[:512])
    with pytest.raises(TileError):
        tlog.tile_hashes(leaf_hashes, Tile(0, 3, 6))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 5_000_000))
def test_tiles_for_size_cover_the_tree_once_per_level(size):
    tiles = tlog.tiles_for_size(size)
    for level in {t.level for t in tiles}:
        at_level = sorted((t for t in tiles if t.level == level), key=lambda t: t.index)
        assert [t.index for t in at_level] == list(range(len(at_level)))
        assert all(not t.is_partial for t in at_level[:-1])
        assert sum(t.width for t in at_level) == size // 256**level
    for tile in tiles[:20] + tiles[-20:]:
        assert tlog.parse_tile_path(tile.path()) == tile
