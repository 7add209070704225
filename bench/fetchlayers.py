"""What each layer of pithsync's fetch path costs per GET over bare aiohttp: the CPU of one
process sending the re-sync's conditional GETs (each answered 304) to the benchmark's nginx
mirrors, layer by layer, the layers alternating round by round.

    python -m bench.fetchlayers --records 1000 --rounds 4

Layers, each including the ones above it: `bare` (session.get and read, the Fetcher's own
session), `deadline` (inside asyncio.timeout, as Fetcher._request), `follow` (Fetcher._follow:
redirect loop, budget turn, _read), `request` (Fetcher._request: deadline and error mapping),
`get` (Fetcher.get: policy prefix and breaker).  Prints the median microseconds per GET of
each, and every round.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from collections.abc import Awaitable, Callable

import uvloop

from bench import forgetree, harness
from bench.servers import start_mirrors
from pithsync.config import CrawlConfig
from pithsync.fetch import Fetcher, UrlPolicy, Validators

CONCURRENCY = 48


async def measure(base_urls: list[str], suffixes: list[str], rounds: int) -> dict[str, list]:
    """Microseconds of CPU per GET of each layer, one figure per round."""
    urls = [
        f"{b}/pith/{s}/{k}.json" for s in suffixes for b in base_urls for k in ("bundle", "state")
    ]
    crawl = dataclasses.replace(CrawlConfig(), concurrency=CONCURRENCY, per_host=CONCURRENCY)
    async with Fetcher(crawl, UrlPolicy.for_mirrors(base_urls, crawl)) as fetcher:
        session = fetcher._session
        validators: dict[str, Validators] = {}
        for u in urls:  # one unconditional GET each, for the validators the re-sync sends
            validators[u] = (await fetcher.get(u)).validators

        async def bare(u: str) -> None:
            async with session.get(u, headers=validators[u].headers(), allow_redirects=False) as r:
                await r.read()

        async def deadline(u: str) -> None:
            async with asyncio.timeout(crawl.deadline_s):
                await bare(u)

        async def follow(u: str) -> None:
            await fetcher._follow(u, validators[u], asyncio.timeout(None))

        async def request(u: str) -> None:
            await fetcher._request(u, validators[u])

        async def get(u: str) -> None:
            await fetcher.get(u, validators[u])

        layers: dict[str, Callable[[str], Awaitable[None]]] = {
            "bare": bare, "deadline": deadline, "follow": follow, "request": request, "get": get,
        }  # fmt: skip
        out: dict[str, list] = {name: [] for name in layers}
        for _ in range(rounds):
            for name, one in layers.items():
                pending = iter(urls)

                async def worker(one=one, pending=pending) -> None:
                    for u in pending:
                        await one(u)

                t = time.process_time()
                await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
                out[name].append((time.process_time() - t) / len(urls) * 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fetchlayers", description=__doc__)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    tree = forgetree.build(harness.DEFAULT_OUT / "cache", args.records, log=print)
    work = harness.DEFAULT_OUT / "fetchlayers"
    work.mkdir(parents=True, exist_ok=True)
    mirrors = start_mirrors(tree.root, work, "auto", log=print)
    try:
        suffixes = [n.rpartition(":")[2] for n in tree.numbers[: args.records]]
        out = uvloop.run(measure(mirrors.base_urls, suffixes, args.rounds))
    finally:
        mirrors.stop()
    for name, runs in out.items():
        rounds = ", ".join(f"{x:.1f}" for x in runs)
        print(f"{name:<9} {statistics.median(runs):6.1f} us/GET (rounds {rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
