"""The Fetcher: GETs with one shared session, bounded by timeouts, a deadline and a size cap,
retried with backoff, and suspicious of every redirect."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from urllib.parse import urljoin

import aiohttp
import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from pithsync.config import CrawlConfig
from pithsync.core.compare import Fetched, Retrieval
from pithsync.fetch.breaker import MirrorBreaker, origin_key
from pithsync.fetch.budget import HostBudgets
from pithsync.fetch.errors import describe
from pithsync.fetch.policy import PolicyError, PolicyResolver, UrlPolicy

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024


class _Retryable(Exception):
    """A failed attempt worth another: carries what to report if it was the last."""

    def __init__(
        self, fetched: Fetched, retry_after: float | None = None, status: int | None = None
    ):
        super().__init__(fetched.detail)
        self.fetched = fetched
        self.retry_after = retry_after
        self.status = status  # the HTTP status of the answer, if there was one


def _unreachable(url: str, detail: str, code: str) -> Fetched:
    return Fetched(Retrieval.UNREACHABLE, url, detail=detail, code=code)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """The seconds a Retry-After header asks to wait, or None when absent or unreadable.

    Args:
        value: the header, as delay-seconds or an HTTP date.
        now: the current time (epoch seconds), for a date.

    Returns:
        The wait in seconds (never negative), or None.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes "²", which float refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - now) if when is not None else None
    except (TypeError, ValueError, IndexError, OverflowError):  # a year too large overflows
        return None


@dataclass(frozen=True)
class Validators:
    """The validators of a document fetched before, sent to get a 304 when it is unchanged."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        """The conditional request headers these validators make."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass(frozen=True)
class Response:
    """What one GET produced.  `not_modified` means the validators matched (no body sent)."""

    fetched: Fetched
    status: int | None = None
    validators: Validators = Validators()
    not_modified: bool = False
    attempts: int = 1
    wire_bytes: int = 0


Sleep = Callable[[float], Awaitable[None]]


class Fetcher:
    """GETs documents with one shared ClientSession.  Use as `async with Fetcher(...) as f:`."""

    def __init__(
        self,
        crawl: CrawlConfig,
        policy: UrlPolicy,
        *,
        sleep: Sleep = anyio.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.crawl = crawl
        self.policy = policy
        self._sleep = sleep
        self._clock = clock
        self.breaker = MirrorBreaker(crawl.mirror_down_after, crawl.mirror_retry_s, monotonic)
        rate = crawl.max_requests_per_s
        self.budgets = HostBudgets(rate, sleep, monotonic) if rate is not None else None
        self._session: aiohttp.ClientSession | None = None
        self._trusted_prefixes = policy.trusted_prefixes  # computed once: checked on every request
        self.requests = 0
        self.bytes_received = 0

    async def __aenter__(self) -> Fetcher:
        connector = aiohttp.TCPConnector(
            limit=max(1, self.crawl.concurrency),
            limit_per_host=max(1, self.crawl.per_host),
            resolver=PolicyResolver(self.policy),
            ttl_dns_cache=300,
        )
        timeout_s = self.crawl.timeout_s
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s),
            headers={"User-Agent": self.crawl.user_agent, "Accept": "application/json"},
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),  # mirrors get no state from us
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, validators: Validators | None = None) -> Response:
        """GET `url` with retries.  Never raises for anything a server or the network does.

        Args:
            url: the document's URL (checked by the policy unless on a configured mirror).
            validators: those of the copy held, to make the request conditional.

        Returns:
            What the last attempt produced, with the number of attempts.
        """
        if not url.startswith(self._trusted_prefixes):
            try:
                self.policy.check(url)
            except PolicyError as exc:
                detail = f"refused by policy: {exc}"
                return Response(_unreachable(url, detail, "refused_by_policy"))
        try:
            # Most requests succeed at once: the retry machinery starts at the first failure.
            return await self._get_once(url, validators)
        except _Retryable as exc:
            if self.crawl.retries == 0:
                return self._gave_up(url, exc, 1)
            return await self._retry(url, validators, exc)

    async def _retry(self, url: str, validators: Validators | None, first: _Retryable) -> Response:
        """The attempts after the `first` failed one, until one answers or the retries run out."""
        replay = [first]
        attempts = 0

        async def attempt_once() -> Response:
            # tenacity's first attempt is the failure we already have, so it counts the attempts
            # and computes every wait (Retry-After, backoff with jitter) itself.
            if replay:
                raise replay.pop()
            return await self._get_once(url, validators)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.crawl.retries + 1),
            wait=lambda state: self._wait_before_retry(url, state),
            retry=retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = await attempt_once()
                    return replace(response, attempts=attempts)
        except _Retryable as exc:
            return self._gave_up(url, exc, attempts)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_before_retry(self, url: str, state: RetryCallState) -> float:
        if self.breaker.is_open(origin_key(url)):
            return 0.0  # the next attempt fails fast: no point sleeping first
        exc = state.outcome.exception() if state.outcome else None
        backoff = wait_random_exponential(multiplier=0.5, max=self.crawl.backoff_max_s)(state)
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return exc.retry_after
        return backoff

    @staticmethod
    def _gave_up(url: str, exc: _Retryable, attempts: int) -> Response:
        detail = f"{exc.fetched.detail} (after {attempts} attempt{'s' if attempts > 1 else ''})"
        fetched = _unreachable(url, detail, exc.fetched.code)
        return Response(fetched, exc.status, attempts=attempts)

    async def _get_once(self, url: str, validators: Validators | None) -> Response:
        origin = origin_key(url)
        if not self.breaker.allows(origin):
            detail = (
                f"not tried: the mirror failed to connect or answer {self.breaker.failures(origin)}"
                f" requests in a row in this run (tried again every {self.breaker.retry_s:g}s)"
            )
            return Response(_unreachable(url, detail, "mirror_down"))
        try:
            response = await self._request(url, validators)
        except _Retryable as exc:
            self.breaker.record(origin, exc.fetched.code)
            raise
        self.breaker.record(origin, None)
        return response

    async def _request(self, url: str, validators: Validators | None) -> Response:
        assert self._session is not None, "use Fetcher as an async context manager"
        # The connector caps connections (overall and per host); waiting for one counts toward
        # the deadline, not toward the connect timeout.
        self.requests += 1
        deadline = asyncio.timeout(self.crawl.deadline_s)
        try:
            async with deadline:
                return await self._follow(url, validators, deadline)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # TimeoutError is an OSError: the deadline's own (asyncio.timeout raises it only when
            # it cut the request; an outside cancellation stays a cancellation), or aiohttp's read
            # or connect timeout.  ValueError: aiohttp rejects some malformed responses that way.
            if deadline.expired():
                detail = f"no complete response within the deadline of {self.crawl.deadline_s:g}s"
                raise _Retryable(_unreachable(url, detail, "deadline_exceeded")) from None
            code, detail = describe(exc)
            raise _Retryable(_unreachable(url, detail, code)) from None

    async def _follow(
        self, url: str, validators: Validators | None, deadline: asyncio.Timeout
    ) -> Response:
        headers = validators.headers() if validators is not None else {}
        current = url
        for _ in range(self.crawl.max_redirects + 1):
            await self._take_turn(current, deadline)
            async with self._session.get(current, headers=headers, allow_redirects=False) as resp:
                if resp.status not in _REDIRECTS:
                    return await self._read(url, resp, current)
                target = urljoin(current, resp.headers.get("Location", ""))
                try:
                    if not self._same_origin(url, target):
                        self.policy.check(target)
                except PolicyError as exc:
                    detail = f"redirect to {target[:200]!r} refused: {exc}"
                    return Response(_unreachable(url, detail, "redirect_refused"), resp.status)
                current = target
                headers = {}  # validators belong to the URL they were given for
        detail = f"more than {self.crawl.max_redirects} redirects"
        return Response(_unreachable(url, detail, "too_many_redirects"))

    async def _take_turn(self, url: str, deadline: asyncio.Timeout) -> None:
        """Wait for a token of `url`'s host's budget (when [crawl] max_requests_per_s is set).
        The wait is the budget's, not the mirror's: the deadline stops for it."""
        if self.budgets is None:
            return
        when = deadline.when()
        deadline.reschedule(None)
        waited = await self.budgets.turn(url)
        deadline.reschedule(None if when is None else when + waited)

    def _same_origin(self, a: str, b: str) -> bool:
        try:
            return UrlPolicy.origin(a) == UrlPolicy.origin(b) and self.policy.is_trusted(a)
        except PolicyError:
            return False

    async def _read(self, url: str, resp: aiohttp.ClientResponse, sent_to: str) -> Response:
        """What `resp` (the answer of `sent_to`, the last hop from `url`) means."""
        status = resp.status
        v = Validators(resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
        if status == 304:
            fetched = Fetched(Retrieval.FOUND, url, detail="not modified")
            return Response(fetched, status, v, not_modified=True)
        if status == 404 or status == 410:
            return Response(Fetched(Retrieval.NOT_FOUND, url, detail=f"HTTP {status}"), status)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._clock())
            detail = f"HTTP {status}"
            honoured = None
            if retry_after is not None:
                detail += f" (Retry-After {retry_after:g}s)"
                # Capped, so that a hostile mirror cannot stall the run: the retry waits this
                # long, and with a budget nothing else goes to the host before it either.
                honoured = min(retry_after, self.crawl.backoff_max_s)
                if self.budgets is not None and status in (429, 503):
                    self.budgets.pause(sent_to, honoured)
            code = "rate_limited" if status == 429 else "server_error"
            raise _Retryable(_unreachable(url, detail, code), honoured, status)
        if status != 200:
            return Response(_unreachable(url, f"HTTP {status}", "http_status"), status)
        body = await self._read_body(url, resp)
        if isinstance(body, Response):
            return body
        self.bytes_received += len(body)
        return Response(Fetched(Retrieval.FOUND, url, body=body), status, v, wire_bytes=len(body))

    async def _read_body(self, url: str, resp: aiohttp.ClientResponse) -> bytes | Response:
        """The body of a 200, or a Response saying it exceeds the size cap."""
        cap = self.crawl.max_bytes
        declared = resp.content_length
        encoded = "Content-Encoding" in resp.headers
        if declared is not None and declared > cap and not encoded:
            detail = f"Content-Length {declared} exceeds the {cap}-byte cap"
            return self._too_large(url, detail, resp.status)
        if declared is not None and not encoded and "Transfer-Encoding" not in resp.headers:
            # aiohttp reads exactly the declared length (within the cap, checked above), and
            # fails a shorter body: one read instead of the chunk loop.  Not when the response
            # is also chunked: then the declared length would bound nothing.
            return await resp.read()
        # Chunked or compressed: the cap counts decoded bytes as they arrive.
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            size += len(chunk)
            if size > cap:
                detail = f"body exceeds the {cap}-byte cap (after decoding)"
                return self._too_large(url, detail, resp.status)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _too_large(url: str, detail: str, status: int) -> Response:
        return Response(Fetched(Retrieval.UNUSABLE, url, detail=detail, code="too_large"), status)
