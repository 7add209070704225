"""The observer's identity: the Ed25519 key that signs this store's observation log.

The key is a file beside the store, `<store path>.observer-key`, mode 0600, holding the signing
key in Go sumdb's `PRIVATE+KEY+<name>+<id>+<base64>` form (core.note.NoteSigner).  It is made on
first use and never written anywhere else: not into the database, not into output or logs.  Its
name is the origin of the log's checkpoints.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import stat
from collections.abc import Iterable

from nacl.signing import SigningKey

from pithsync.base.exits import StoreError
from pithsync.core.errors import InvalidKey
from pithsync.core.note import NoteSigner, VerifierKey, is_valid_key_name

KEY_SUFFIX = ".observer-key"
MAX_KEY_FILE_BYTES = 4096  # a key line is about 120 bytes


class ObserverKeyError(StoreError):
    """The observer key file cannot be used: unreadable, malformed, or readable by others."""


def key_path(store_path: str) -> str:
    """Where the observer key of the store at `store_path` lives."""
    return store_path + KEY_SUFFIX


def fingerprint(key: VerifierKey) -> str:
    """`SHA256:<base64 of SHA-256 of the public key>`, unpadded, as ssh-keygen -l prints."""
    digest = hashlib.sha256(key.public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def default_name(public_key: bytes) -> str:
    """`<hostname>/pithsync/<8 hex of sha256(public key)>`: a name unique to the key."""
    host = "".join(c for c in socket.gethostname() if c.isprintable() and not c.isspace())
    host = host.replace("+", "-") or "localhost"
    return f"{host}/pithsync/{hashlib.sha256(public_key).hexdigest()[:8]}"


def load_or_create(store_path: str, name: str | None = None) -> NoteSigner:
    """The store's observer key, made on first use.

    Args:
        store_path: the store's path; the key is `<store_path>.observer-key`.  For an
            in-memory store (":memory:") a key that lives as long as the process.
        name: the key's name when it is made (`[observer] name`); None: `default_name`.
            An existing key keeps its own name.

    Raises:
        ObserverKeyError: the file is readable by group or others, is not a signing key, cannot
            be read or cannot be created; the message names the file, never its content.
    """
    if store_path == ":memory:":
        return _new_signer(name)
    path = key_path(store_path)
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    signer = _new_signer(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use that one
        return _load(path)
    except FileNotFoundError:
        directory = os.path.dirname(os.path.abspath(path))
        raise ObserverKeyError(
            f"cannot create observer key {path}: no directory {directory}"
        ) from None
    except OSError as exc:
        raise ObserverKeyError(f"cannot create observer key {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(signer.encode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        os.unlink(path)
        raise ObserverKeyError(f"cannot write observer key {path}: {exc.strerror}") from None
    return signer


def pinned_keys(store_path: str, peers: Iterable[VerifierKey], extra: Iterable[VerifierKey] = ()):
    """The observer keys an evidence file is checked with: the peers' pinned keys, `extra` (the
    command line's) and this store's own key when it has one (none is made here: verifying
    needs no store)."""
    keys = [*peers, *extra]
    if store_path != ":memory:" and os.path.exists(key_path(store_path)):
        keys.append(load_or_create(store_path).verifier_key)
    return keys


def _new_signer(name: str | None) -> NoteSigner:
    seed = bytes(SigningKey.generate())
    public = bytes(SigningKey(seed).verify_key)
    chosen = name if name is not None else default_name(public)
    if not is_valid_key_name(chosen):
        raise ObserverKeyError(f"[observer] name {chosen[:80]!r} has a space or a '+' in it")
    return NoteSigner(chosen, seed)


def _load(path: str) -> NoteSigner:
    """Raises FileNotFoundError when there is no file, ObserverKeyError when it is unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ObserverKeyError(f"cannot open observer key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ObserverKeyError(f"observer key {path} is not a regular file")
        if mode & 0o077:
            raise ObserverKeyError(
                f"observer key {path} is readable by others (mode {stat.S_IMODE(mode):04o}):"
                f" run `chmod 600 {path}` if nobody else has read it, else move it aside to"
                " make a new key"
            )
        data = fh.read(MAX_KEY_FILE_BYTES + 1)
    try:
        text = data.decode("ascii")
        if len(data) > MAX_KEY_FILE_BYTES or not text.endswith("\n"):
            raise ValueError
        return NoteSigner.parse(text[:-1])
    except (ValueError, InvalidKey):
        raise ObserverKeyError(
            f"observer key {path} is not a PRIVATE+KEY+<name>+<id>+<key> line"
        ) from None
