"""The stack floor: a bare aiohttp loop that only downloads a list of URLs, with one ClientSession
and the same connection limits as pithsync's Fetcher ([crawl] concurrency overall, per_host per
host).  Run as a subprocess so its wall time includes interpreter start and imports, like the
`pithsync pull` it is compared with.

    python -m bench.bare URLFILE --concurrency 64 --per-host 16     (prints one JSON line)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp


async def fetch_all(urls: list[str], concurrency: int, per_host: int) -> dict:
    t0 = time.perf_counter()
    statuses: dict[int, int] = {}
    nbytes = 0
    it = iter(urls)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=per_host)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal nbytes
            for url in it:
                async with session.get(url) as resp:
                    body = await resp.read()
                    nbytes += len(body)
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "requests": len(urls),
        "by_status": statuses,
        "bytes": nbytes,
        "elapsed_s": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("urlfile")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--per-host", type=int, default=16)
    args = p.parse_args(argv)
    urls = [u for u in open(args.urlfile).read().split() if u]
    result = asyncio.run(fetch_all(urls, args.concurrency, args.per_host))
    print(json.dumps(result))
    return 0 if set(result["by_status"]) == {200} else 1


if __name__ == "__main__":
    sys.exit(main())
