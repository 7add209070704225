"""Running pithsync under systemd: the units as systemd reads them, their hardening (and that
pithsync runs under it), and the timer's run beside a manual pull that holds the lock."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from synctools import run_cli, write_config

from pithsync import cli
from pithsync.store import run_lock
from pithsync.testing import forge
from pithsync.testing.mirror import MirrorServer, bundle_path

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
UNITS = ("pithsync-sync.service", "pithsync-sync.timer", "pithsync-serve.service")
SERVICES = ("pithsync-sync.service", "pithsync-serve.service")
# `systemd-analyze security` rates 0 (locked down) to 10; with systemd 252 the sync rates 1.1
# and serve 0.9 (both were 1.4 before MemoryDenyWriteExecute=, PrivateUsers= and UMask=0077).
MAX_EXPOSURE = 1.2
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def unit_directives(path: Path) -> dict[str, list[str]]:
    """Directive name -> its values, in order, across the unit's sections."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed: the units are checked by directive only")
    return tool


def units_with_real_exec(tmp_path: Path) -> list[Path]:
    """Copies of the units naming an executable that exists here: the units name
    /usr/local/bin/pithsync, which this machine may not have, and verify checks it."""
    exe = shutil.which("pithsync", path=str(Path(sys.executable).parent)) or sys.executable
    copies = []
    for name in UNITS:
        copy = tmp_path / name
        copy.write_text((SYSTEMD / name).read_text().replace("/usr/local/bin/pithsync", exe))
        copies.append(copy)
    return copies


# -- the units ----------------------------------------------------------------------------------


def test_systemd_units_verify(tmp_path):
    sync = unit_directives(SYSTEMD / "pithsync-sync.service")
    timer = unit_directives(SYSTEMD / "pithsync-sync.timer")
    serve = unit_directives(SYSTEMD / "pithsync-serve.service")
    assert sync["Type"] == ["oneshot"]
    assert sync["ExecStart"] == ["/usr/local/bin/pithsync sync --if-locked=skip"]
    assert sync["User"] == ["pithsync"] and sync["Group"] == ["pithsync"]
    assert "DynamicUser" not in sync
    assert sync["StateDirectory"] == ["pithsync"]
    assert "PITHSYNC_CONFIG=/etc/pithsync/pithsync.toml" in sync["Environment"]
    assert "PITHSYNC_DB=/var/lib/pithsync/pithsync.db" in sync["Environment"]
    hardening = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "MemoryDenyWriteExecute": "yes",
        "PrivateUsers": "yes",
        "UMask": "0077",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    for unit in (sync, serve):
        for key, value in hardening.items():
            assert unit[key] == [value], key
    # Divergence is reported by [alerts], not a unit failure; 75 is a run skipped because a
    # manual pull held the store (sync --if-locked=skip).
    assert sync["SuccessExitStatus"] == ["1 75"]
    assert serve["IPAddressDeny"] == ["any"] and serve["IPAddressAllow"] == ["localhost"]
    assert timer["Persistent"] == ["true"] and timer["OnCalendar"] and timer["RandomizedDelaySec"]
    assert serve["ExecStart"][0].startswith("/usr/local/bin/pithsync serve")

    tool = systemd_analyze()
    copies = units_with_real_exec(tmp_path)
    proc = subprocess.run(
        [tool, "verify", "--man=no", *map(str, copies)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), (
        proc.stdout + proc.stderr
    )


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_security_exposure_is_low(tmp_path, name):
    tool = systemd_analyze()
    unit = next(p for p in units_with_real_exec(tmp_path) if p.name == name)
    proc = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = proc.stdout + proc.stderr
    found = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+) (\w+)", text)
    if found is None and "offline" in text and "unrecognized" in text:
        pytest.skip(f"this systemd-analyze has no --offline: {text.strip()[:200]}")
    assert found, text
    assert float(found.group(1)) <= MAX_EXPOSURE, text


def test_readme_install_steps_work_in_the_order_written():
    """Step 4's manual pull runs before the timer's first run: the state directory must exist
    by then, owned by pithsync, and the configuration must be readable by that user."""
    text = (REPO / "README.md").read_text()
    steps = text.split("## Running it for real", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [line.strip() for line in steps.splitlines()]
    first_pull = next(i for i, line in enumerate(lines) if line.startswith("sudo -u pithsync"))
    user = next(i for i, line in enumerate(lines) if line.startswith("sudo useradd"))
    state_dir = next(
        (
            i
            for i, line in enumerate(lines)
            if re.fullmatch(
                r"sudo install -d -o pithsync -g pithsync -m 07[57]0 "
                r"/var/lib/pithsync",
                line,
            )
        ),
        None,
    )
    assert state_dir is not None and user < state_dir < first_pull, steps
    config = next(line for line in lines if line.endswith(" /etc/pithsync/pithsync.toml"))
    assert re.search(r"-m 0640 -g pithsync |-m 0644 ", config), config  # pithsync reads it
    assert (
        next(i for i, line in enumerate(lines) if "ln -s" in line and "/usr/local/bin" in line)
        < first_pull
    )


# -- the timer's run beside a manual pull ------------------------------------------------------


async def sync_process(conf: str, db: str, *flags: str) -> tuple[int, str, str]:
    """`pithsync sync` in its own process, as the timer starts it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pithsync",
        "--config",
        conf,
        "--db",
        db,
        "sync",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=ENV,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode, out.decode(), err.decode()


def run_rows(db: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("select command, exit_code from runs order by started_at").fetchall()


async def test_sync_if_locked_skip_exits_busy_and_commits_nothing(tmp_path):
    r = forge.forge_record(41, 2)
    db = str(tmp_path / "s.db")
    async with MirrorServer("m") as m:
        m.put_record(r.bundle())
        conf = write_config(
            tmp_path / "c.toml", [m.spec()], timeout_s=5, extra="[store]\nlock_timeout_s = 0.2\n"
        )
        code, out = await run_cli("--config", conf, "--db", db, "pull", r.pith_number)
        assert code == 0, out
        fetched = m.count(bundle_path(r.suffix))

        with run_lock(db, timeout_s=5):  # a manual pull, holding the store for the whole test
            skipped = await sync_process(conf, db, "--if-locked=skip")
            failed = await sync_process(conf, db)

        code, out, err = skipped
        assert code == cli.ExitCode.BUSY == 75, (out, err)
        assert re.search(
            r"^(?:ts=\S+ )?level=warning logger=pithsync\.sync event=run_skipped "
            r'reason="store locked by another run" lock=\S+s\.db\.lock '
            rf"holder_pid={os.getpid()} waited_s=0\.2 exit=75$",
            err,
            re.M,
        ), err
        assert out == ""
        code, out, err = failed
        assert code == cli.ExitCode.STORE, (out, err)
        assert "another pithsync run holds" in err and "run_skipped" not in err
        assert m.count(bundle_path(r.suffix)) == fetched  # neither run fetched anything
        assert run_rows(db) == [("pull", 0)]  # nor recorded a run

        code, out, err = await sync_process(conf, db, "--if-locked=skip")  # the lock is free
        assert code == 0 and "run_skipped" not in err, (out, err)
        assert run_rows(db) == [("pull", 0), ("sync", 0)]
        assert m.count(bundle_path(r.suffix)) == fetched + 1


def test_busy_exit_code_is_documented():
    help_text = subprocess.run(
        [sys.executable, "-m", "pithsync", "sync", "--help"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "--if-locked" in help_text and "75" in help_text
    assert "| 75 |" in (REPO / "README.md").read_text()


# -- MemoryDenyWriteExecute= -------------------------------------------------------------------

# What MemoryDenyWriteExecute=yes asks of the kernel (since Linux 6.3 systemd uses the same
# prctl where it can): no mapping may become writable and executable, kept across execve.
MDWE_WRAPPER = r"""
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
zero = ctypes.c_ulong(0)
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, ctypes.c_ulong(PR_MDWE_REFUSE_EXEC_GAIN), zero, zero, zero) != 0:
    print("PR_SET_MDWE refused: " + os.strerror(ctypes.get_errno()), file=sys.stderr)
    sys.exit(99)
os.execv(sys.argv[1], sys.argv[1:])
"""

WX_PROBE = r"""
import ctypes, mmap
print("mdwe", ctypes.CDLL(None).prctl(66, ctypes.c_ulong(0), ctypes.c_ulong(0),
                                      ctypes.c_ulong(0), ctypes.c_ulong(0)))
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("wx mapped")
except PermissionError:
    print("wx refused")
"""


def under_mdwe(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """argv run with MemoryDenyWriteExecute in force, or the test skipped if the kernel has none."""
    proc = subprocess.run(
        [sys.executable, "-c", MDWE_WRAPPER, *argv],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode == 99 and "PR_SET_MDWE refused" in proc.stderr:
        pytest.skip(f"{proc.stderr.strip()} (Linux < 6.3?): MemoryDenyWriteExecute not emulated")
    return proc


async def test_pithsync_runs_under_memory_deny_write_execute(tmp_path):
    assert importlib.util.find_spec("uvloop") is not None, "the sync's loop should be uvloop here"
    probe = await asyncio.to_thread(under_mdwe, sys.executable, "-c", WX_PROBE)
    assert probe.stdout.split() == ["mdwe", "1", "wx", "refused"], probe  # the restriction holds

    # The demo: seeds verified with pynacl (cffi), aiohttp on uvloop, orjson, sqlite.
    demo = await asyncio.to_thread(under_mdwe, sys.executable, "-m", "pithsync", "demo", "--json")
    assert demo.returncode == 0, demo.stderr
    assert '"as_expected": true' in demo.stdout, demo.stdout

    # A real pull against a local mirror, split over forked workers as a big sync is.
    recs = [forge.forge_record(50 + i, 2) for i in range(4)]
    async with MirrorServer("m") as m:
        for r in recs:
            m.put_record(r.bundle())
        # `extra` continues write_config's [crawl] section.
        conf = write_config(tmp_path / "c.toml", [m.spec()], timeout_s=10, extra="processes = 2\n")
        pull = await asyncio.to_thread(
            under_mdwe,
            sys.executable,
            "-m",
            "pithsync",
            "--config",
            conf,
            "--db",
            str(tmp_path / "s.db"),
            "--json",
            "pull",
            *(r.pith_number for r in recs),
        )
    assert pull.returncode == 0, pull.stderr
    assert pull.stdout.count('"in_sync"') == len(recs), pull.stdout


# -- PrivateUsers= and the namespaces ----------------------------------------------------------


def test_pithsync_runs_in_a_user_namespace_that_maps_only_its_user(tmp_path):
    """PrivateUsers=yes as unshare(1) does it for root: only uid/gid 0 mapped, every other owner
    seen as nobody, no capability over the host; with private mount, IPC, UTS and PID spaces."""
    tool = shutil.which("unshare")
    if tool is None or os.geteuid() != 0:
        pytest.skip("needs unshare(1) and root to emulate PrivateUsers=")
    argv = [
        tool,
        "--user",
        "--map-current-user",
        "--mount",
        "--ipc",
        "--uts",
        "--pid",
        "--fork",
        "--",
        sys.executable,
    ]
    probe = subprocess.run(
        [*argv, "-c", "print(open('/proc/self/uid_map').read().split())"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        pytest.skip(f"unshare refused here: {probe.stderr.strip()[:200]}")
    assert probe.stdout.strip() == "['0', '0', '1']", probe  # the namespace is in force
    demo = subprocess.run(
        [*argv, "-m", "pithsync", "demo", "--json"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert demo.returncode == 0 and '"as_expected": true' in demo.stdout, demo.stderr
