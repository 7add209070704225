"""Profiling a `pithsync pull` with py-spy, and a summary of where its time goes.

`record()` runs the command under `py-spy record --subprocesses --format raw` (collapsed stacks,
one line per distinct stack with its sample count, worker processes included; speedscope.app and
flamegraph.pl open the file as is).  Only on-CPU samples are taken (no --idle: a worker process
blocked on its pipe would otherwise fill the profile), so percentages are of CPU time.
`summarise()` turns that into the top functions by self and total time, self time by area
(module), and the share of each process.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
# Leaf functions that mean "the thread is waiting", not computing.
_IDLE_LEAVES = {
    "select",
    "poll",
    "epoll",
    "_run_once",
    "wait",
    "acquire",
    "sleep",
    "accept",
    "recv_into",
    "readinto",
}


def find_py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def record(
    cmd: list[str], out_raw: Path, *, rate: int = 200, env=None, cwd=None, stdout=None, stderr=None
) -> dict:
    spy = find_py_spy()
    if spy is None:
        raise RuntimeError(
            "py-spy is not installed (pip install py-spy; bash bench/run installs "
            "bench/requirements.txt)"
        )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            spy,
            "record",
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            str(rate),
            "--output",
            str(out_raw),
            "--",
            *cmd,
        ],
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
    )
    return {"exit_code": proc.returncode, "wall_s": time.perf_counter() - t0, "raw": str(out_raw)}


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3."):
        if marker in file:
            tail = file.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker.startswith("/lib") and "/" in tail else tail
    if "/pithsync/" in file:
        return "pithsync/" + file.rsplit("/pithsync/", 1)[1]
    return file


def _parse(raw: Path, processes: Counter | None = None) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in raw.read_text(errors="replace").splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack_text, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = []
        for part in stack_text.split(";") if stack_text.strip() else []:
            m = _FRAME.match(part.strip())
            if m:
                frames.append((m.group("func"), _short(m.group("file"))))
            elif part.strip():
                frames.append((part.strip(), ""))
        # py-spy prefixes process (and thread) pseudo-frames; they carry no file.
        frames = [f for f in frames if f[1]]
        if processes is not None:
            processes[_role(frames)] += n
        stacks.append((frames, n))
    return stacks


def _role(frames: list[tuple[str, str]]) -> str:
    """py-spy labels every stack with the root pid, so a worker process is told by its frames:
    a sync's forked worker runs `_worker_main` (pithsync/run/workers.py)."""
    worker = any(
        fn == "_worker_main"
        or fl.startswith(
            (
                "anyio/to_process.py",
                "multiprocessing/spawn.py",
                "multiprocessing/pool.py",
                "concurrent/futures/process.py",
            )
        )
        for fn, fl in frames
    )
    return "worker processes" if worker else "main process"


def _is_idle(frames: list[tuple[str, str]]) -> bool:
    if not frames:
        return True
    func, file = frames[-1]
    return (
        func in _IDLE_LEAVES
        and (file.startswith(("selectors.py", "asyncio/", "threading.py", "socket.py", "ssl.py")))
    ) or func in ("select", "poll")


def _area(file: str) -> str:
    if file.startswith("pithsync/"):
        return file.removesuffix(".py")
    top = file.split("/", 1)[0]
    return top.removesuffix(".py")


def summarise(raw: Path, top: int = 15) -> dict:
    processes: Counter = Counter()
    stacks = _parse(raw, processes)
    total = sum(n for _, n in stacks)
    idle = sum(n for f, n in stacks if _is_idle(f))
    self_c: Counter = Counter()
    total_c: Counter = Counter()
    area_c: Counter = Counter()
    proc_of: dict[str, str] = {}
    per_proc: Counter = Counter()
    for frames, n in stacks:
        if not frames:
            continue
        proc = _role(frames)
        per_proc[proc] += n
        leaf = frames[-1]
        self_c[f"{leaf[0]} ({leaf[1]})"] += n
        area_c["(waiting for I/O)" if _is_idle(frames) else _area(leaf[1])] += n
        for key in {f"{fn} ({fl})" for fn, fl in frames}:
            total_c[key] += n
            proc_of.setdefault(key, proc)

    def pct(c: int) -> float:
        return round(100.0 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "idle_pct": pct(idle),
        "busy_pct": pct(total - idle),
        "top_self": [
            {"function": k, "samples": v, "pct": pct(v)} for k, v in self_c.most_common(top)
        ],
        # Frames on 80% or more of their process's samples (<module>, main, cmd_pull, the event
        # loop's run and task plumbing, the worker's loop) only say "everything": skipped.
        "top_total": [
            {"function": k, "samples": v, "pct": pct(v)}
            for k, v in total_c.most_common(top + 80)
            if v < 0.8 * per_proc[proc_of[k]]
        ][:top],
        "by_area_self": [
            {"area": k, "samples": v, "pct": pct(v)} for k, v in area_c.most_common(20)
        ],
        "by_process": [
            {"process": k, "samples": v, "pct": pct(v)} for k, v in processes.most_common()
        ],
    }


def render(summary: dict, title: str) -> str:
    lines = [
        (
            f"== profile: {title} ({summary['samples']} on-CPU samples; "
            "percentages are of all of them) =="
        )
    ]
    sections = [
        ("by process:", "by_process", "process"),
        ("top by self time:", "top_self", "function"),
        (
            "top by total (inclusive) time (wrappers on >= 80% of samples left out):",
            "top_total",
            "function",
        ),
        ("self time by area:", "by_area_self", "area"),
    ]
    for heading, key, name in sections:
        if key == "by_process" and len(summary.get(key, [])) <= 1:
            continue  # one process: nothing to split
        lines.append(heading)
        lines += [f"  {r['pct']:5.1f}%  {r[name]}" for r in summary[key]]
    return "\n".join(lines)


def children(raw: Path, focus: str, top: int = 20) -> list[tuple[str, int, float]]:
    """Where the time of every frame whose name contains `focus` goes: its callees (inclusive),
    and "(self)" for the time in the frame itself; shares are of all samples."""
    stacks = _parse(raw)
    total = sum(n for _, n in stacks) or 1
    c: Counter = Counter()
    for frames, n in stacks:
        idx = next((i for i, (fn, fl) in enumerate(frames) if focus in f"{fn} ({fl})"), None)
        if idx is None:
            continue
        nxt = frames[idx + 1] if idx + 1 < len(frames) else None
        c["(self)" if nxt is None else f"{nxt[0]} ({nxt[1]})"] += n
    return [(k, v, round(100.0 * v / total, 1)) for k, v in c.most_common(top)]


def _cli(argv: list[str]) -> None:
    # python -m bench.profile FILE.raw [TOP]            summarise a recording
    # python -m bench.profile FILE.raw --focus NAME     the callees of the frames named NAME
    if len(argv) > 2 and argv[1] == "--focus":
        for name, n, share in children(Path(argv[0]), argv[2], 30):
            print(f"  {share:5.1f}%  {n:6d}  {name}")
    else:
        print(render(summarise(Path(argv[0]), int(argv[1]) if len(argv) > 1 else 15), argv[0]))


if __name__ == "__main__":
    try:
        _cli(sys.argv[1:])
    except BrokenPipeError:  # piped into head
        sys.stderr.close()
