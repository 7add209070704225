"""Typed errors raised by the core.  Everything the core raises on bad input is a PithError."""

from __future__ import annotations


class PithError(Exception):
    """Base of every error the protocol core raises on bad input."""


class MalformedDocument(PithError):
    """Bytes that are not a strict JSON document, or a document not of the expected schema."""


class DocumentTooLarge(MalformedDocument):
    """The document exceeds the configured size cap."""


class InvalidPithNumber(PithError):
    """A string that is not a pith number in any accepted form."""


class InvalidKey(PithError):
    """A pinned key that is not a usable Ed25519 public key."""
