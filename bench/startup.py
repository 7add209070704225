"""The start of the `pithsync` program against the interpreter's own start:

    python -m bench.startup [--runs N]

prints `pithsync --version: X ms = N x python -c pass`, each the median of N runs (default
10), taken in turn so that both see the same load.  A figure to read, not a test: the tests
check what `--version` imports (tests/test_cli_args.py), which no load can change."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from bench.harness import pithsync_exe


def wall_ms(cmd: list[str]) -> float:
    """One run of `cmd`, its output discarded: wall time in milliseconds."""
    started = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


def measure(runs: int = 10) -> tuple[float, float]:
    """(median ms of `pithsync --version`, median ms of `python -c pass`) over `runs` each."""
    version, bare = [], []
    for _ in range(runs):
        version.append(wall_ms([*pithsync_exe(), "--version"]))
        bare.append(wall_ms([sys.executable, "-c", "pass"]))
    return statistics.median(version), statistics.median(bare)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    ap.add_argument("--runs", type=int, default=10, help="runs of each command (default 10)")
    args = ap.parse_args(argv)
    version, bare = measure(max(1, args.runs))
    print(
        f"pithsync --version: {version:.1f} ms = {version / bare:.2f} x python -c pass"
        f" ({bare:.1f} ms; medians of {args.runs})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
