"""Peers (pithsync/core/peers.py): checkpoints against the last one seen, proofs read from
tlog-tiles, and split views against lag."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pithsync.core import merkle, peers, tlog
from pithsync.core.note import NoteSigner
from pithsync.core.peers import Lag, Rewrite, SignedCheckpoint, SplitKind, SplitView, View
from pithsync.core.tlog import Checkpoint, TileError

SIGNER = NoteSigner("peer.example/pithsync/00000001", hashlib.sha256(b"peer key").digest())
LEAVES = [merkle.leaf_hash(b"statement %d" % i) for i in range(70_000)]


def signed(size: int, leaves=LEAVES) -> SignedCheckpoint:
    cp = Checkpoint(SIGNER.name, size, merkle.root(leaves[:size]))
    return SignedCheckpoint(cp, tlog.sign_checkpoint(cp, [SIGNER]))


def tiles_of(leaves, needed):
    return {t: tlog.tile_hashes(leaves, t) for t in needed}


# -- proofs from tiles ---------------------------------------------------------------------------

SIZES = [
    (1, 2), (3, 7), (7, 8), (8, 300), (255, 256), (256, 257), (200, 513), (1000, 1000),
    (4095, 65_537), (65_536, 70_000), (1, 70_000), (69_999, 70_000),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new"), SIZES)
def test_consistency_proof_from_tiles_is_the_rfc_proof(old, new):
    needed = peers.consistency_tiles(old, new)
    assert set(needed) <= set(tlog.tiles_for_size(new)), "only tiles the new tree publishes"
    proof = peers.consistency_from_tiles(old, new, tiles_of(LEAVES[:new], needed))
    assert proof == merkle.consistency_proof(LEAVES[:new], old)
    a, b = signed(old), signed(new)
    assert peers.check_checkpoint("p", a, b, proof) is None


@pytest.mark.parametrize(("index", "size"), [(0, 1), (5, 7), (255, 256), (300, 513), (1, 70_000)])
def test_inclusion_proof_from_tiles_is_the_rfc_proof(index, size):
    needed = peers.inclusion_tiles(index, size)
    assert set(needed) <= set(tlog.tiles_for_size(size))
    proof = peers.inclusion_from_tiles(index, size, tiles_of(LEAVES[:size], needed))
    assert proof == merkle.inclusion_proof(LEAVES[:size], index)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 3000))
def test_consistency_from_tiles_for_any_sizes(old, extra):
    new = old + extra
    proof = peers.consistency_from_tiles(
        old, new, tiles_of(LEAVES[:new], peers.consistency_tiles(old, new))
    )
    assert proof == merkle.consistency_proof(LEAVES[:new], old)


def test_a_missing_or_short_tile_is_a_tile_error_not_a_proof():
    needed = peers.consistency_tiles(3, 600)
    tiles = tiles_of(LEAVES[:600], needed)
    with pytest.raises(TileError, match="not given"):
        peers.consistency_from_tiles(3, 600, dict(list(tiles.items())[1:]))
    first = needed[0]
    with pytest.raises(TileError, match="holds"):
        peers.consistency_from_tiles(3, 600, {**tiles, first: tiles[first][:-1]})


# -- checkpoints against the last one seen -------------------------------------------------------


def test_a_growing_log_and_the_same_checkpoint_are_fine():
    assert peers.check_checkpoint("p", signed(5), signed(5)) is None
    assert not peers.needs_consistency_proof(signed(5).checkpoint, signed(5).checkpoint)
    assert peers.needs_consistency_proof(signed(5).checkpoint, signed(9).checkpoint)
    assert not peers.needs_consistency_proof(signed(0).checkpoint, signed(9).checkpoint)
    assert peers.check_checkpoint("p", signed(0), signed(9)) is None


def test_same_size_other_root_is_a_rewrite_holding_both_notes():
    other = [merkle.leaf_hash(b"other %d" % i) for i in range(10)]
    old, new = signed(10), signed(10, other)
    found = peers.check_checkpoint("B", old, new)
    assert found is not None and found.how is Rewrite.OTHER_ROOT
    assert (found.old.note, found.new.note) == (old.note, new.note)
    assert "B" in found.message and "size 10" in found.message


def test_a_smaller_size_is_a_rewrite():
    found = peers.check_checkpoint("B", signed(10), signed(9))
    assert found is not None and found.how is Rewrite.SHRANK


def test_a_forged_consistency_proof_is_a_rewrite():
    # The new tree rewrote leaf 2: its tiles give a proof that cannot reach the old root.
    forked = list(LEAVES[:20])
    forked[2] = merkle.leaf_hash(b"rewritten")
    old, new = signed(10), signed(20, forked)
    proof = peers.consistency_from_tiles(10, 20, tiles_of(forked, peers.consistency_tiles(10, 20)))
    found = peers.check_checkpoint("B", old, new, proof)
    assert found is not None and found.how is Rewrite.INCONSISTENT
    honest = peers.consistency_from_tiles(
        10, 20, tiles_of(LEAVES[:20], peers.consistency_tiles(10, 20))
    )
    assert peers.check_checkpoint("B", old, signed(20), honest) is None


# -- split views ---------------------------------------------------------------------------------

E = [f"sha256:{i:064x}" for i in range(5)]
T0, T1, LATE = "2026-06-01T10:00:00Z", "2026-06-01T10:30:00.5Z", "2026-06-03T10:00:00Z"


def view(events, state="a" * 64, at=T0):
    return View(frozenset(events), state if events else None, at)


def test_a_fork_within_the_window_is_a_split_view():
    found = peers.compare_views(view(E[:3]), view([*E[:2], E[4]], "b" * 64, T1), 86400)
    assert isinstance(found, SplitView) and found.kind is SplitKind.FORK


def test_the_same_events_with_another_state_is_a_split_view():
    found = peers.compare_views(view(E[:3]), view(E[:3], "b" * 64, T1), 86400)
    assert isinstance(found, SplitView) and found.kind is SplitKind.STATE


def test_a_subset_history_is_lag_not_a_split_view():
    assert peers.compare_views(view(E[:2]), view(E[:3], "b" * 64, T1), 86400) == Lag("mine")
    assert peers.compare_views(view(E[:3]), view(E[:2], "b" * 64, T1), 86400) == Lag("theirs")


def test_nothing_to_say_outside_the_window_without_a_history_or_when_equal():
    assert peers.compare_views(view(E[:3]), view([E[4]], "b" * 64, LATE), 86400) is None
    assert peers.compare_views(view(E[:3]), view([E[4]], "b" * 64, T1), 1800) is None
    assert isinstance(peers.compare_views(view(E[:3]), view([E[4]], "b" * 64, T1), 1801), SplitView)
    assert peers.compare_views(view([]), view(E[:3], at=T1), 86400) is None
    assert peers.compare_views(view(E[:3]), view(E[:3], at=T1), 86400) is None


def test_seconds_since_epoch_matches_the_calendar():
    assert peers.seconds_since_epoch("1970-01-01T00:00:00Z") == 0
    assert peers.seconds_since_epoch("2000-03-01T00:00:00Z") == 951868800
    assert peers.seconds_since_epoch("2026-06-01T10:30:00.5Z") == 1780309800.5
