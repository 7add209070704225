"""Helpers for crawler tests: a Config pointing at local mirrors, and a way to run a sync
in-process with an injected sleep (no test waits for a real backoff)."""

from __future__ import annotations

import contextlib
from dataclasses import replace

from aiohttp import web

from pithsync.config import Config, CrawlConfig, ScheduleConfig
from pithsync.core.keys import TrustStore
from pithsync.fetch import Fetcher
from pithsync.observer import load_or_create
from pithsync.run.engine import SyncEngine, Target
from pithsync.run.sink import RecordSink
from pithsync.store import Store
from pithsync.testing import forge

# A schedule under which every tracked record is due again at once: what tests of a sync that
# re-checks its records (written before the schedule) mean.  Tests of the schedule pass theirs.
ALWAYS_DUE = ScheduleConfig(min_interval=1e-6, max_interval=1e-6)
ALWAYS_DUE_TOML = "[schedule]\nmin_interval = 1e-6\nmax_interval = 1e-6\n"


def make_config(
    tmp_path,
    mirrors,
    trust: TrustStore | None = None,
    schedule: ScheduleConfig = ALWAYS_DUE,
    **crawl,
) -> Config:
    # Headroom for a machine whose cores CPU-bound neighbours share: a test that wants a
    # timeout sets its own (a 2 s read timeout once left a record unstored at load 19).
    crawl.setdefault("retries", 1)
    crawl.setdefault("timeout_s", 10.0)
    crawl.setdefault("deadline_s", 30.0)
    crawl.setdefault("follow_hints", False)
    tmp_path.mkdir(parents=True, exist_ok=True)  # pithsync creates the store, not its directory
    return Config(
        trust=trust or forge.test_trust(),
        mirrors=tuple(mirrors),
        crawl=replace(CrawlConfig(), **crawl),
        db_path=str(tmp_path / "pithsync.db"),
        lock_timeout_s=2.0,
        schedule=schedule,
    )


class NoSleep:
    """Records the waits tenacity asked for instead of sleeping."""

    def __init__(self):
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def pull(
    cfg: Config,
    *pith_numbers: str,
    depth: int = 0,
    sleep=None,
    store: Store | None = None,
    checkpoint: bool = False,
):
    """One run through the real engine and fetcher; returns (results by pith number, store).
    `checkpoint`: sign the observation log after it, as a real run does (evidence needs it)."""
    own = store is None
    store = store or Store.open(cfg.db_path)
    run_id = store.begin_run("test")
    async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg), sleep=sleep or NoSleep()) as fetcher:
        sink = RecordSink(cfg, store)
        engine = SyncEngine(cfg, store, fetcher, sink=sink)
        targets = [
            Target(p.split(":")[-1], p if p.count(":") == 2 else None, depth) for p in pith_numbers
        ]
        await engine.run(run_id, targets)
    if checkpoint:
        store.sign_checkpoint(load_or_create(store.path, cfg.observer.name))
    store.finish_run(run_id, 0, {})
    by_number = dict(sink.results)
    if own:
        store.close()
    return by_number


def statuses(result) -> dict[str, str]:
    return {m.name: m.status.value for m in result.mirrors}


# -- the CLI, in process ----------------------------------------------------------------------

REGISTRY_KEY = ("pith-v1-2026-05", "stVStoiQhXFxp4s2pdzPNoqVNBMojDU/fJ2db5S3CbM=")


def write_config(
    path,
    mirrors,
    *,
    test_key: bool = True,
    timeout_s: float = 10,
    extra: str = "",
    schedule: str = ALWAYS_DUE_TOML,
) -> str:
    """A pithsync.toml pinning the forge's test key (unless test_key=False) and the registry
    key, with `mirrors`, retries off and hints not followed, every record always due (unless
    `schedule` says otherwise); `extra` is appended (more sections).
    `path` is the file, or a directory to put pithsync.toml in."""
    from pathlib import Path

    path = Path(path)
    if path.suffix != ".toml":
        path = path / "pithsync.toml"
    keys = ([(forge.TEST_KEY.key_id, forge.TEST_KEY.public_key_b64)] if test_key else []) + [
        REGISTRY_KEY
    ]
    text = "".join(f'[[trust.keys]]\nkey_id = "{k}"\npublic_key_b64 = "{b}"\n\n' for k, b in keys)
    text += "".join(
        f'[[mirrors]]\nname = "{m.name}"\nbase_url = "{m.base_url}"\n\n' for m in mirrors
    )
    text += f"[crawl]\nretries = 0\ntimeout_s = {timeout_s}\nfollow_hints = false\n{extra}\n"
    text += f"\n{schedule}\n"  # after `extra`, which may add keys to [crawl]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


async def run_cli(*argv) -> tuple[int, str]:
    """cli.main in a worker thread (it runs its own event loop while the test's mirrors serve);
    returns (exit code, stdout)."""
    import contextlib
    import io

    import anyio

    from pithsync import cli

    buf = io.StringIO()

    def call():
        with contextlib.redirect_stdout(buf):
            return cli.main([str(a) for a in argv])

    code = await anyio.to_thread.run_sync(call)
    return code, buf.getvalue()


# -- bad copies a mirror serves ----------------------------------------------------------------

BAD_VARIANTS = (
    "tampered",
    "rewritten",
    "lying_state_json",
    "lying_embedded_state",
    "html",
    "wrong_record",
    "stale",
)


def serve_bad_copy(mirror, record, variant: str, *, other: int = 2) -> None:
    """Make `mirror` serve a bad copy of forged `record`: one of BAD_VARIANTS."""
    from pithsync.testing.mirror import HOSTILE_BODIES, bundle_path, state_path

    good, suffix = record.bundle(), record.suffix
    if variant == "tampered":
        mirror.put_record(forge.tampered(good), state=good["state"])
    elif variant == "rewritten":
        mirror.put_record(forge.rewritten_with(good))
    elif variant == "lying_state_json":
        mirror.put_record(good, state=forge.lying_state(good["state"]))
    elif variant == "lying_embedded_state":
        mirror.put_record(forge.bundle_with_lying_state(record))
    elif variant == "html":
        mirror.put(bundle_path(suffix), HOSTILE_BODIES["html"], "text/html")
        mirror.put(state_path(suffix), forge.dumps(good["state"]))
    elif variant == "wrong_record":
        bundle = forge.forge_record(other).bundle()
        mirror.put(bundle_path(suffix), forge.dumps(bundle))
        mirror.put(state_path(suffix), forge.dumps(bundle["state"]))
    elif variant == "stale":
        mirror.put_record(record.bundle(upto=2))
    else:
        raise ValueError(f"unknown variant {variant!r}")


def json_lines(text: str) -> list[dict]:
    """What a streaming command (pull, sync, journal, alerts) printed under --json: JSON Lines,
    one object a line, every line whole."""
    import json

    items = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(item, dict) for item in items), text[:500]
    return items


@contextlib.asynccontextmanager
async def serving(app: web.Application):
    """An aiohttp application (pithsync's mirror app, say) on 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
