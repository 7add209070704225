"""The benchmark harness (bench/, issue 5) at N=200, so it cannot rot.

Runs the harness's own functions end to end -- forged tree, three local mirrors (nginx when
installed, else the Python fallback, which the harness announces), the curl and aiohttp floors,
full sync, re-sync, in-process verification, the size curve -- and checks the *structure* of the
results.  It never asserts a timing ratio: those depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from bench.floor import FloorVerifier  # noqa: E402
from bench.servers import find_nginx  # noqa: E402

pytestmark = pytest.mark.slow  # real subprocesses, hundreds of records or many examples

needs_curl = pytest.mark.skipif(
    shutil.which("curl") is None, reason="the harness's curl floor needs curl"
)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _run(
    tmp_path: Path, records: int, curve: list[int], server: str = "auto", repeat: int = 1
) -> tuple[dict, str]:
    lines: list[str] = []

    def log(*args) -> None:
        text = " ".join(str(a) for a in args)
        lines.append(text)
        print(text)

    opts = harness.Options(
        records=records,
        curve=curve,
        server=server,
        repeat=repeat,
        baseline_repeat=1,
        verify_repeat=1,
        schedule_records=2000,
        out_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        log=log,
    )
    return harness.run_benchmark(opts), "\n".join(lines)


def _check_structure(results: dict, n: int, sizes: list[int]) -> None:
    f = results["figures"]
    assert set(f) >= {
        "full_sync_ratio",
        "stack_ratio",
        "resync",
        "verification",
        "memory_and_scaling",
        "cpu_per_record",
        "schedule",
    }
    # 1 and 2: the full sync against curl and against bare aiohttp
    assert (
        _positive(f["full_sync_ratio"]["value"])
        and _positive(f["full_sync_ratio"]["curl_s"])
        and _positive(f["full_sync_ratio"]["pithsync_s"])
    )
    assert _positive(f["stack_ratio"]["value"]) and _positive(f["stack_ratio"]["aiohttp_s"])
    # 3: the re-sync
    r = f["resync"]
    assert _positive(r["time_ratio"]) and _positive(r["resync_s"])
    assert 0 < r["share_304"] <= 1 and r["requests"] == n * 6
    assert (
        r["bytes_ratio"] is not None
        and 0 <= r["bytes_ratio"] < 1
        and _positive(r["full_body_bytes"])
    )
    assert r["in_sync"] is True
    # 4: verification in process, against the floor, every document verified by both
    v = f["verification"]
    assert (
        _positive(v["ratio"])
        and _positive(v["pithsync_s"])
        and _positive(v["floor_s"])
        and _positive(v["pithsync_3_copies_s"])
    )
    assert v["all_verified"] is True and v["n"] == n
    enc = v["canonical_encoder"]
    assert enc["byte_identical"] is True and enc["values"] >= 2 * n and _positive(enc["speedup"])
    # 5: peak RSS and time per record at every size of the curve
    m = f["memory_and_scaling"]
    assert (
        sorted(int(k) for k in m["peak_rss_mb"])
        == sizes
        == sorted(int(k) for k in m["time_per_record_ms"])
    )
    assert all(_positive(x) for x in m["peak_rss_mb"].values()) and all(
        _positive(x) for x in m["time_per_record_ms"].values()
    )
    if len(sizes) > 1:
        assert _positive(m["growth"])
    # 6: CPU per record of the full sync and the re-sync, at N and at every size of the curve
    c = f["cpu_per_record"]
    assert _positive(c["full_ms"]) and _positive(c["resync_ms"])
    assert c["full_ms"] == min(c["full_cpu_s"]) / n * 1000
    assert all(_positive(x) for x in c["floors_ms"].values())
    # ... and over the floors of the same run: the full sync's (six GETs and the verification
    # floor), the re-sync's (six conditional GETs, every one answered 304)
    assert c["full_floor_ratio"] == c["full_ms"] / c["floors_ms"]["full_floor_ms"]
    assert c["resync_floor_ratio"] == c["resync_ms"] / c["floors_ms"]["resync_floor_ms"]
    assert results["sanity"]["bare_conditional_all_304"] is True
    assert sorted(int(k) for k in c["full_ms_by_size"]) == sizes
    assert sorted(int(k) for k in c["resync_ms_by_size"]) == sizes
    assert all(
        _positive(x) for x in [*c["full_ms_by_size"].values(), *c["resync_ms_by_size"].values()]
    )
    # wait4's CPU covers every process of the pull that /proc showed, workers included
    assert all(
        cpu >= sampled * 0.98 - 0.05
        for cpu, sampled in zip(c["full_cpu_s"], c["full_tree_cpu_sampled_s"], strict=True)
    )
    # the observation log's own work, replayed on every statement the full sync logged
    o = f["observation_log"]
    assert o["statements"] == n * 3
    assert _positive(o["full_ms_per_record"]) and _positive(o["resync_ms_per_record"])
    assert o["full_share"] == o["full_ms_per_record"] / c["full_ms"]
    assert o["resync_share"] == o["resync_ms_per_record"] / c["resync_ms"]
    # 7: the scheduler simulation's three figures, each against its target
    s = f["schedule"]
    assert s["records"] == 2000 and _positive(s["max_requests_per_hour"])
    assert _positive(s["longest_unchecked_h"]) and s["longest_recheck_s"] >= 0
    # the sync itself worked, and the table has a row per target with a verdict
    assert results["in_sync"] is True and results["valid"] is True
    assert all(v is not False for v in results["sanity"].values()), results["sanity"]
    assert results["sanity"]["full_sync_requests"] == n * 6
    assert len(results["checks"]) == 18 and {c["status"] for c in results["checks"]} <= {
        "PASS",
        "FAIL",
        "n/a",
        "info",
    }
    m_info = results["machine"]
    assert _positive(m_info["nproc"]) and m_info["cpu_model"] and _positive(m_info["ram_gib"])


@needs_curl
def test_bench_smoke(tmp_path):
    results, log = _run(tmp_path, 200, [100, 200], repeat=2)
    _check_structure(results, 200, [100, 200])
    # Two full syncs and two re-syncs at N: the fastest of each is the one the figures use.
    pulls = results["runs"]["pulls"]
    assert len(pulls) == 4
    assert results["figures"]["full_sync_ratio"]["pithsync_s"] == min(
        p["wall_s"] for p in pulls[0::2]
    )
    assert results["figures"]["resync"]["resync_s"] == min(p["wall_s"] for p in pulls[1::2])
    if find_nginx() is None:
        assert results["server"]["fallback"] and "FALLBACK" in log  # said loudly, not silently
    else:
        assert results["server"]["kind"] == "nginx" and not results["server"]["fallback"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["figures"].keys() == results["figures"].keys()
    table = harness.render_table(results)
    for row in (
        "full sync ratio",
        "stack ratio",
        "re-sync",
        "verification ratio",
        "peak RSS",
        "time per record",
        "CPU per record",
        "observation log:",
        "schedule: requests per hour per mirror",
        "nproc",
    ):
        assert row in table


@needs_curl
@pytest.mark.skipif(
    find_nginx() is None, reason="without nginx the test above already runs the fallback"
)
def test_bench_smoke_fallback_server(tmp_path):
    results, log = _run(tmp_path, 40, [40], server="python")
    assert results["server"]["fallback"] and "FALLBACK" in log
    assert "FALLBACK" in harness.render_table(results)
    _check_structure(results, 40, [40])


def test_floor_rejects_what_pithsync_rejects():
    """The floor is a verifier, not just a parser: a tampered copy fails it."""
    from pithsync.testing import forge

    bundle = forge.forge_record(1).bundle()
    fv = FloorVerifier(forge.TEST_KEY.key_id, forge.TEST_KEY.public_key_b64)
    assert fv.verify(forge.dumps(bundle), forge.dumps(bundle["state"]))
    assert not fv.verify(forge.dumps(forge.tampered(bundle)), forge.dumps(bundle["state"]))
    assert not fv.verify(forge.dumps(forge.rewritten_with(bundle)), forge.dumps(bundle["state"]))
    assert not fv.verify(forge.dumps(bundle), forge.dumps(forge.lying_state(bundle["state"])))


_FORKS_TWO_SPINNERS = """
import multiprocessing, time
def spin():
    began = time.process_time()
    while time.process_time() - began < 0.3:
        pass
if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=spin) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
"""


def test_measured_cpu_includes_the_workers_a_process_reaped(tmp_path):
    """Figure 6 counts a pull's workers through os.wait4: Linux folds the CPU of the children a
    process reaped into what wait4 reports for it, as the pull's joined workers are."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("the tree's CPU is sampled from Linux's /proc")
    r = harness.run_measured(
        [sys.executable, "-c", _FORKS_TWO_SPINNERS],
        tmp_path / "out",
        tmp_path / "err",
        sample_tree=True,
    )
    assert r["exit_code"] == 0, (tmp_path / "err").read_text()
    # Two workers of at least 0.3 s of CPU each, which the parent itself never spent.
    assert r["cpu_s"] >= 0.6 and r["cpu_s"] == r["cpu_user_s"] + r["cpu_sys_s"]
    assert r["cpu_s"] >= r["tree_cpu_sampled_s"]


def test_profile_tells_a_forked_worker_from_the_parent(tmp_path):
    """py-spy labels every stack with the pull's pid: a forked worker is told by _worker_main."""
    from bench import profile as prof

    root = 'process 7:"pithsync pull";<module> (pithsync/__main__.py:1);main (pithsync/cli/x.py:2)'
    worker = ";_worker_main (pithsync/run/workers.py:350);verify (pithsync/core/verify.py:9)"
    raw = tmp_path / "p.raw"
    raw.write_text(f"{root}{worker} 3\n{root};commit (pithsync/store/x.py:4) 1\n")
    shares = {p["process"]: p["pct"] for p in prof.summarise(raw)["by_process"]}
    assert shares == {"worker processes": 75.0, "main process": 25.0}
