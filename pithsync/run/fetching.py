"""Fetching a record's copies: bundle and state from every mirror at once, conditionally where
the store holds the bytes a mirror's validators name (a 304 then stands for those bytes, which
are read from the store only when the record needs them: with_bodies)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Iterable

from pithsync.base.exits import StoreError
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
            One copy per mirror, in the order of `mirrors`.  A document answered 304 comes
            without its stored bytes (its stored_sha256 names them): see with_bodies.
        """
        if known is not None:
            urls, validators, held = known.urls, known.validators, known.stored
        else:
            urls = [mirror_urls(m, suffix) for m in mirrors]
            every_url = [u for triple in urls for u in triple]
            validators, held = self.store.validators_with_stored(every_url)
        docs: list[dict[str, Fetched]] = [{} for _ in mirrors]
        keep: list[list[ValidatorRow]] = [[] for _ in mirrors]
        asked: list[dict[str, list[Fetch]]] = [{"bundle": [], "state": []} for _ in mirrors]

        async def get(i: int, kind: str, url: str, fallback: str | None) -> None:
            fetched, row, status = await self._get(url, validators.get(url), held)
            asked[i][kind].append(Fetch(url, status, fetched.sha256))
            if (
                fallback is not None
                and fetched.retrieval is Retrieval.NOT_FOUND
                and fallback != url
            ):
                fetched, row, status = await self._get(fallback, validators.get(fallback), held)
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

    def with_bodies(self, copies: list[FetchedCopy]) -> list[FetchedCopy]:
        """`copies` with the stored bytes of each document answered 304 read in, all in one
        query: what verification and comparison need.

        Raises:
            StoreError: the store no longer holds bytes it held when the record was fetched.
        """
        unread = {
            doc.stored_sha256
            for f in copies
            for doc in (f.copy.bundle, f.copy.state)
            if doc.code == NOT_MODIFIED and doc.body is None
        }
        if not unread:
            return copies
        found = self.store.document_bodies(sorted(unread))
        if lost := unread - found.keys():
            raise StoreError(f"the store lost the stored document {min(lost)[:16]}... in a run")

        def read(doc: Fetched) -> Fetched:
            if doc.code != NOT_MODIFIED or doc.body is not None:
                return doc
            return dataclasses.replace(doc, body=found[doc.stored_sha256])

        return [
            dataclasses.replace(
                f,
                copy=dataclasses.replace(
                    f.copy, bundle=read(f.copy.bundle), state=read(f.copy.state)
                ),
            )
            for f in copies
        ]

    async def _get(
        self, url: str, stored: dict | None, held: set[str]
    ) -> tuple[Fetched, ValidatorRow | None, int | None]:
        """One document, asked for conditionally when the store holds the bytes its validators
        name; with the validators row to keep, if the mirror sent validators for a new body,
        and the HTTP status of the answer (None: no answer)."""
        sha = stored.get("document_sha256") if stored else None
        at_hand = sha is not None and sha in held
        asked = Validators(stored.get("etag"), stored.get("last_modified")) if at_hand else None
        resp = await self.fetcher.get(url, asked)
        if resp.not_modified:
            if not at_hand:  # a 304 we did not ask for: ask again without validators
                resp = await self.fetcher.get(url, None)
            else:
                unchanged = Fetched(
                    Retrieval.FOUND, url, None, "not modified", code=NOT_MODIFIED,
                    stored_sha256=sha,
                )  # fmt: skip
                return unchanged, None, resp.status
        f, v = resp.fetched, resp.validators
        if f.retrieval is Retrieval.FOUND and f.body is not None and (v.etag or v.last_modified):
            return f, (url, v.etag, v.last_modified, f.sha256), resp.status
        return f, None, resp.status
