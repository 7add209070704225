"""The stack floor: a bare aiohttp loop that only downloads a list of URLs, with one ClientSession
and the same connection limits as pithsync's Fetcher ([crawl] concurrency overall, per_host per
host).  Run as a subprocess so its wall time includes interpreter start and imports, like the
`pithsync pull` it is compared with.

    python -m bench.bare URLFILE --concurrency 64 --per-host 16     (prints one JSON line)
    python -m bench.bare URLFILE --save-validators V.json           (also keeps each ETag)
    python -m bench.bare URLFILE --validators V.json                (conditional GETs: 304s)

The conditional form is the re-sync's floor: the same URLs asked with If-None-Match (and
If-Modified-Since), as pithsync's re-sync asks them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp


async def fetch_all(
    urls: list[str], concurrency: int, per_host: int, validators: dict[str, dict] | None = None
) -> tuple[dict, dict[str, dict]]:
    t0 = time.perf_counter()
    statuses: dict[int, int] = {}
    seen: dict[str, dict] = {}
    nbytes = 0
    it = iter(urls)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=per_host)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal nbytes
            for url in it:
                headers = (validators or {}).get(url)
                async with session.get(url, headers=headers) as resp:
                    body = await resp.read()
                    nbytes += len(body)
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    if "ETag" in resp.headers:
                        seen[url] = {"If-None-Match": resp.headers["ETag"]}
                        if "Last-Modified" in resp.headers:
                            seen[url]["If-Modified-Since"] = resp.headers["Last-Modified"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    result = {
        "requests": len(urls),
        "by_status": statuses,
        "bytes": nbytes,
        "elapsed_s": time.perf_counter() - t0,
    }
    return result, seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("urlfile")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--per-host", type=int, default=16)
    p.add_argument("--validators", help="JSON file of each URL's ETag: ask conditionally")
    p.add_argument("--save-validators", help="write each URL's ETag to this JSON file")
    args = p.parse_args(argv)
    urls = [u for u in open(args.urlfile).read().split() if u]
    validators = None
    if args.validators:
        with open(args.validators) as f:
            validators = json.load(f)
    result, seen = asyncio.run(fetch_all(urls, args.concurrency, args.per_host, validators))
    if args.save_validators:
        with open(args.save_validators, "w") as f:
            json.dump(seen, f)
    print(json.dumps(result))
    expected = 304 if validators is not None else 200
    return 0 if set(result["by_status"]) == {expected} else 1


if __name__ == "__main__":
    sys.exit(main())
