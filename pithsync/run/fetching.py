"""Fetching a record's copies: bundle and state from every mirror at once, conditionally where
the store holds the bytes a mirror's validators name (a 304 then stands for those bytes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable

from pithsync.core.compare import Fetched, MirrorCopy, Retrieval
from pithsync.core.observation import Fetch
from pithsync.core.plan import NOT_MODIFIED, FetchedCopy
from pithsync.core.urls import MirrorSpec
from pithsync.fetch import Fetcher, Validators
from pithsync.run.readahead import Known, mirror_urls
from pithsync.store import Store

# (url, etag, last-modified, body sha256): a validators row to keep for a fetched document.
ValidatorRow = tuple[str, str | None, str | None, str | None]


async def gather_fetches(fetches: Iterable[Awaitable[None]]) -> None:
    """Run a record's fetches side by side until all have finished (or the first fails).

    asyncio's own TaskGroup, not anyio's as elsewhere: aiohttp needs asyncio anyway, and
    anyio's per-task bookkeeping is costly at six tasks per record."""
    async with asyncio.TaskGroup() as tg:
        for fetch in fetches:
            tg.create_task(fetch)


class RecordFetcher:
    """Fetches records' copies through one Fetcher, reading validators from the store."""

    def __init__(self, fetcher: Fetcher, store: Store):
        self.fetcher = fetcher
        self.store = store

    async def fetch_all(
        self, mirrors: list[MirrorSpec], suffix: str, known: Known | None = None
    ) -> list[FetchedCopy]:
        """Bundle and state from every mirror at once.

        Args:
            mirrors: the mirrors to ask, in order.
            suffix: the record's suffix.
            known: what was read ahead for the configured mirrors; for hinted ones (None) the
                validators are looked up here.

        Returns:
            One copy per mirror, in the order of `mirrors`.
        """
        if known is not None:
            urls, validators, bodies = known.urls, known.validators, known.bodies
        else:
            urls = [mirror_urls(m, suffix) for m in mirrors]
            every_url = [u for triple in urls for u in triple]
            validators, bodies = self.store.validators_with_bodies(every_url)
        docs: list[dict[str, Fetched]] = [{} for _ in mirrors]
        keep: list[list[ValidatorRow]] = [[] for _ in mirrors]
        asked: list[dict[str, list[Fetch]]] = [{"bundle": [], "state": []} for _ in mirrors]

        async def get(i: int, kind: str, url: str, fallback: str | None) -> None:
            fetched, row, status = await self._get(url, validators.get(url), bodies)
            asked[i][kind].append(Fetch(url, status, fetched.sha256))
            if (
                fallback is not None
                and fetched.retrieval is Retrieval.NOT_FOUND
                and fallback != url
            ):
                fetched, row, status = await self._get(fallback, validators.get(fallback), bodies)
                asked[i][kind].append(Fetch(fallback, status, fetched.sha256))
            docs[i][kind] = fetched
            if row is not None:
                keep[i].append(row)

        await gather_fetches(
            fetch
            for i, (bundle_url, state_url, well_known_url) in enumerate(urls)
            for fetch in (
                get(i, "bundle", bundle_url, well_known_url),
                get(i, "state", state_url, None),
            )
        )
        return [
            FetchedCopy(
                MirrorCopy(m.base_url, docs[i]["bundle"], docs[i]["state"]),
                keep[i],
                (*asked[i]["bundle"], *asked[i]["state"]),
            )
            for i, m in enumerate(mirrors)
        ]

    async def _get(
        self, url: str, stored: dict | None, bodies: dict[str, bytes]
    ) -> tuple[Fetched, ValidatorRow | None, int | None]:
        """One document, asked for conditionally when its stored bytes are at hand; with the
        validators row to keep, if the mirror sent validators for a new body, and the HTTP
        status of the answer (None: no answer)."""
        sha = stored.get("document_sha256") if stored else None
        cached_body = bodies.get(sha) if sha else None
        asked = (
            None
            if cached_body is None
            else Validators(stored.get("etag"), stored.get("last_modified"))
        )
        resp = await self.fetcher.get(url, asked)
        if resp.not_modified:
            if cached_body is None:  # a 304 we did not ask for: ask again without validators
                resp = await self.fetcher.get(url, None)
            else:
                unchanged = Fetched(
                    Retrieval.FOUND, url, cached_body, "not modified", code=NOT_MODIFIED,
                    stored_sha256=sha,
                )  # fmt: skip
                return unchanged, None, resp.status
        f, v = resp.fetched, resp.validators
        if f.retrieval is Retrieval.FOUND and f.body is not None and (v.etag or v.last_modified):
            return f, (url, v.etag, v.last_modified, f.sha256), resp.status
        return f, None, resp.status
