"""Writing a file all at once: readers (a metrics collector, a web server, whoever opens an
evidence file) see the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomically(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, mtime: float | None = None
) -> None:
    """Replace `path` with `data` through a temporary file in the same directory, fsync'd, then
    renamed over it.

    Args:
        path: the file to write; its directory must exist.
        data: the whole new content.
        mode: the new file's permissions (readable by other users by default: collectors and
            web servers run as their own users).
        mtime: the new file's modification time (a static server's Last-Modified), else now.

    Raises:
        OSError: the write failed; the old file is untouched and no temporary file is left.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
