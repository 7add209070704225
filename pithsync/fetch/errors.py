"""What went wrong on the wire: aiohttp's and the OS's exceptions as reason codes."""

from __future__ import annotations

import errno
from typing import NamedTuple

import aiohttp

# Newer aiohttp names these; on older ones the checks below fall through to the general cases.
_CONNECT_TIMEOUT = getattr(aiohttp, "ConnectionTimeoutError", ())
_RESET = tuple(c for c in (getattr(aiohttp, "ClientConnectionResetError", None),) if c is not None)

# Failures that say the mirror is not answering at all (as opposed to answering badly).
DOWN_CODES = frozenset(
    {"connection_refused", "connect_timeout", "connect_failed", "timeout", "deadline_exceeded"}
)


class WireFailure(NamedTuple):
    """A failure on the wire: its machine-readable code and a sentence for the report."""

    code: str
    detail: str


def describe(exc: BaseException) -> WireFailure:
    """The failure `exc` stands for, so a report says what actually happened."""
    text = f"{type(exc).__name__}: {str(exc)[:200]}"
    if isinstance(exc, _CONNECT_TIMEOUT):
        return WireFailure("connect_timeout", f"no connection within the timeout ({text})")
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return WireFailure("timeout", f"no data within the read timeout ({text})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connect_failure(exc, text)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        detail = f"server closed the connection without a complete response ({text})"
        return WireFailure("connection_closed", detail)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return _payload_failure(exc, text)
    if isinstance(exc, (ConnectionResetError, *_RESET)) or _errno(exc) == errno.ECONNRESET:
        return WireFailure("connection_reset", f"connection reset ({text})")
    if isinstance(exc, aiohttp.ClientResponseError):
        return WireFailure("bad_response", f"not a valid HTTP response ({text})")
    return WireFailure("network_error", text)


def _errno(exc: BaseException | None) -> int | None:
    return getattr(exc, "errno", None)


def _connect_failure(exc: aiohttp.ClientConnectorError, text: str) -> WireFailure:
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, ConnectionRefusedError) or _errno(os_error) == errno.ECONNREFUSED:
        return WireFailure("connection_refused", f"connection refused ({text})")
    if isinstance(exc, aiohttp.ClientSSLError):
        return WireFailure("tls_error", f"TLS failed ({text})")
    return WireFailure("connect_failed", f"cannot connect ({text})")


def _payload_failure(exc: aiohttp.ClientPayloadError, text: str) -> WireFailure:
    message = str(exc)
    if "ConnectionResetError" in message:
        return WireFailure(
            "connection_reset", f"connection reset in the middle of the body ({text})"
        )
    if "ContentLengthError" in message or "not completed" in message:
        return WireFailure("truncated_body", f"body ended before its declared length ({text})")
    return WireFailure("bad_transfer", f"body could not be decoded ({text})")
