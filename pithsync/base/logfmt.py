"""Log lines in logfmt: `key=value key2="with spaces"`, one encoder for every line pithsync logs.

Log calls pass their fields structurally (`log_event(log, logging.INFO, "record_checked",
record=..., verdict=...)`), never as text formatted into the message, so a value holding a space,
a quote, an `=` or a newline can never break the pairing of keys and values.  A field whose value
is None is left out of the line (unknown is absent, not the text "None").
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

FIELDS_ATTR = "pithsync_fields"  # the LogRecord attribute log_event sets
_BARE = re.compile(r'[^\s"=\\\x00-\x1f\x7f]+')
_KEY = re.compile(r"[A-Za-z_][\w.]*")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _quote(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " " or ch == "\x7f":  # no raw control byte (a terminal escape) reaches a log
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def value_text(value) -> str:
    """One value as logfmt: bare when it can be, else quoted and escaped."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text if _BARE.fullmatch(text) else _quote(text)


def kv(fields: dict | None = None, **more) -> str:
    """`key=value key2="with spaces"`: one line, whatever the values hold (journald-friendly).
    Fields whose value is None are omitted; a key that is not a plain name is replaced by one."""
    parts = []
    for key, value in {**(fields or {}), **more}.items():
        if value is None:
            continue
        name = key if _KEY.fullmatch(key) else "_" + re.sub(r"[^\w.]", "_", key)
        parts.append(f"{name}={value_text(value)}")
    return " ".join(parts)


def log_event(logger: logging.Logger, level: int, event: str, *, exc_info=False, **fields) -> None:
    """Log `event=EVENT` and `fields`, each its own logfmt pair in the line (cli's formatter
    encodes them; the record's message is the same pairs, for handlers that only read that)."""
    if logger.isEnabledFor(level):
        pairs = {"event": event, **fields}
        logger.log(level, "%s", _Lazy(pairs), exc_info=exc_info, extra={FIELDS_ATTR: pairs})


class _Lazy:
    """The message text, encoded only if some handler asks for it."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: dict):
        self.pairs = pairs

    def __str__(self) -> str:
        return kv(self.pairs)


class KeyValueFormatter(logging.Formatter):
    """One logfmt line per event: `level=info logger=pithsync.sync event=record_checked ...`.
    The fields a log call passed (logfmt.log_event) are encoded pair by pair; any other message
    (a library's) becomes msg="...".  No ts= under journald, which stamps its own time."""

    def __init__(self, with_time: bool = True):
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        """The record as one logfmt line."""
        head: dict = {}
        if self.with_time:
            head["ts"] = (
                datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
                + "Z"
            )
        head.update(level=record.levelname.lower(), logger=record.name)
        fields = getattr(record, FIELDS_ATTR, None)
        line = kv(head) + " " + kv(fields if fields is not None else {"msg": record.getMessage()})
        if record.exc_info:
            line += " " + kv(exc=self.formatException(record.exc_info))
        return line
