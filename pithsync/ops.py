"""Operations: `serve`, `export`, `demo`.  (Being built: see issue 4.)"""

from __future__ import annotations


def register(sub, common) -> None:
    """Adds `serve`, `export` and `demo` subcommands."""
