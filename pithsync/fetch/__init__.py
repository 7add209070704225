"""The one HTTP client: bounded, polite, retrying, and suspicious.

Every URL a mirror or hint names passes `UrlPolicy` first, and every redirect is checked again;
bodies are read as a stream and cut off at the size cap (after gzip/deflate decoding);
validators make a re-sync of an unchanged mirror cost a 304.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

import aiohttp
import anyio
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from pithsync.config import CrawlConfig
from pithsync.core.compare import Fetched, Retrieval

log = logging.getLogger("pithsync.fetch")


def _is_public(ip: ipaddress._BaseAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def _ip_literal(host: str) -> ipaddress._BaseAddress | None:
    """The address a URL host names literally, including the legacy IPv4 spellings that
    inet_aton (and so the resolver) accepts: `167772161`, `0x0a000001`, `10.1`, `012.0.0.1`."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


class PolicyError(Exception):
    """A URL the safety policy refuses to fetch."""


@dataclass(frozen=True)
class UrlPolicy:
    """Configured mirrors are always contacted.  Discovered URLs and every redirect go only over
    https to public addresses, unless allow_http / allow_private say otherwise."""

    trusted_origins: frozenset[tuple[str, str, int]]
    allow_http: bool = False
    allow_private: bool = False

    @staticmethod
    def origin(url: str) -> tuple[str, str, int]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise PolicyError(f"bad port in {url[:200]!r}") from None
        return (scheme, (parts.hostname or "").lower(), port)

    @classmethod
    def for_mirrors(cls, base_urls, crawl: CrawlConfig) -> "UrlPolicy":
        return cls(frozenset(cls.origin(u) for u in base_urls), crawl.allow_http, crawl.allow_private)

    @property
    def trusted_prefixes(self) -> tuple[str, ...]:
        """URL prefixes inside configured mirrors, with the port written or (when it is the
        scheme's default) left out: URLs built from a configured base need no check (the
        redirects they lead to still get one)."""
        explicit = [f"{scheme}://{host}:{port}/" for scheme, host, port in self.trusted_origins]
        implicit = [f"{scheme}://{host}/" for scheme, host, port in self.trusted_origins if port == (443 if scheme == "https" else 80)]
        return tuple(explicit + implicit)

    def is_trusted(self, url: str) -> bool:
        try:
            return self.origin(url) in self.trusted_origins
        except PolicyError:
            return False

    def check(self, url: str) -> None:
        """Raise PolicyError unless `url` may be fetched.  Decided from the URL alone: nothing is
        resolved or connected to here."""
        if len(url) > 4096:
            raise PolicyError("URL longer than 4096 characters")
        scheme, host, port = self.origin(url)
        if scheme not in ("http", "https"):
            raise PolicyError(f"scheme {scheme or '(none)'!r} is not http(s)")
        if not host:
            raise PolicyError("URL has no host")
        if (scheme, host, port) in self.trusted_origins:
            return
        ip = _ip_literal(host)
        # The address first: "10.0.0.1 is not public" says more than "http is refused".
        if ip is not None and not _is_public(ip) and not self.allow_private:
            raise PolicyError(f"address {ip} is not public (allow_private = false)")
        if ip is None and (host == "localhost" or host.endswith((".localhost", ".local", ".internal"))) and not self.allow_private:
            raise PolicyError(f"host {host!r} is not public (allow_private = false)")
        if scheme != "https" and not self.allow_http:
            raise PolicyError(f"{scheme}:// is refused for discovered URLs (allow_http = false)")
        # Other names are checked again when resolved (PolicyResolver).

    def trusted_hosts(self) -> frozenset[str]:
        return frozenset(h for _, h, _ in self.trusted_origins)


class PolicyResolver(AbstractResolver):
    """Drops private addresses for hosts that are not configured mirrors, so a public-looking
    name cannot resolve (or rebind) to the inside of the network."""

    def __init__(self, policy: UrlPolicy, inner: AbstractResolver | None = None):
        self._policy = policy
        self._inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.allow_private or host.lower() in self._policy.trusted_hosts():
            return results
        public = [r for r in results if _is_public(ipaddress.ip_address(r["host"]))]
        if not public:
            raise OSError(f"{host} resolves only to non-public addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()


# Newer aiohttp names these; on older ones the checks below fall through to the general cases.
_CONNECT_TIMEOUT = getattr(aiohttp, "ConnectionTimeoutError", ())
_RESET = tuple(c for c in (getattr(aiohttp, "ClientConnectionResetError", None),) if c is not None)


def _describe(exc: BaseException) -> tuple[str, str]:
    """(code, sentence) for a failure on the wire, so a report says what actually happened."""
    text = f"{type(exc).__name__}: {str(exc)[:200]}"
    if isinstance(exc, _CONNECT_TIMEOUT):
        return "connect_timeout", f"no connection within the timeout ({text})"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "timeout", f"no data within the read timeout ({text})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = getattr(exc, "os_error", None)
        if isinstance(os_error, ConnectionRefusedError) or getattr(os_error, "errno", None) == errno.ECONNREFUSED:
            return "connection_refused", f"connection refused ({text})"
        if isinstance(exc, aiohttp.ClientSSLError):
            return "tls_error", f"TLS failed ({text})"
        return "connect_failed", f"cannot connect ({text})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection_closed", f"server closed the connection without a complete response ({text})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        if "ConnectionResetError" in str(exc):
            return "connection_reset", f"connection reset in the middle of the body ({text})"
        if "ContentLengthError" in str(exc) or "not completed" in str(exc):
            return "truncated_body", f"body ended before its declared length ({text})"
        return "bad_transfer", f"body could not be decoded ({text})"
    if isinstance(exc, (ConnectionResetError, *_RESET)) or getattr(exc, "errno", None) == errno.ECONNRESET:
        return "connection_reset", f"connection reset ({text})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "bad_response", f"not a valid HTTP response ({text})"
    return "network_error", text


# Failures that say the mirror is not answering at all (as opposed to answering badly).
_DOWN_CODES = frozenset({"connection_refused", "connect_timeout", "connect_failed", "timeout", "deadline_exceeded"})


def _origin_key(url: str) -> str:
    """scheme://host[:port] as written: what the breaker counts failures by."""
    end = url.find("/", url.find("//") + 2)
    return (url if end < 0 else url[:end]).lower()


class MirrorBreaker:
    """Stops a run from waiting on a mirror that is down.  After `after` requests in a row to one
    origin failed to connect or timed out (every attempt counts), its requests fail at once; one
    request every `retry_s` seconds probes it, and any answer closes the breaker.  Without it a
    down mirror cost every record its full retry backoff (about 3.5 s), so a large run took
    minutes, and records in flight had to be oversized to hide that."""

    def __init__(self, after: int, retry_s: float, clock: Callable[[], float] = time.monotonic):
        self.after = after
        self.retry_s = retry_s
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def is_open(self, origin: str) -> bool:
        until = self._open_until.get(origin)
        return until is not None and self._clock() < until

    def allows(self, origin: str) -> bool:
        """Whether a request to `origin` may go out now; when the breaker is open and a probe
        is due, this request is the probe (the others keep failing fast until it answers)."""
        if origin not in self._open_until:
            return True
        now = self._clock()
        if now < self._open_until[origin]:
            return False
        self._open_until[origin] = now + self.retry_s
        return True

    def record(self, origin: str, code: str | None) -> None:
        """The outcome of one attempt: the failure code, or None for any answer."""
        if code in _DOWN_CODES:
            failures = self._failures[origin] = self._failures.get(origin, 0) + 1
            if self.after and failures >= self.after:
                self._open_until[origin] = self._clock() + self.retry_s
        elif origin in self._failures:
            del self._failures[origin]
            self._open_until.pop(origin, None)

    def failures(self, origin: str) -> int:
        return self._failures.get(origin, 0)


class _Retryable(Exception):
    def __init__(self, fetched: Fetched, retry_after: float | None = None):
        super().__init__(fetched.detail)
        self.fetched = fetched
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now) if when is not None else None


@dataclass(frozen=True)
class Validators:
    etag: str | None = None
    last_modified: str | None = None


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

    def __init__(self, crawl: CrawlConfig, policy: UrlPolicy, *, sleep: Sleep = anyio.sleep, clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.crawl = crawl
        self.policy = policy
        self._sleep = sleep
        self._clock = clock
        self.breaker = MirrorBreaker(crawl.mirror_down_after, crawl.mirror_retry_s, monotonic)
        self._session: aiohttp.ClientSession | None = None
        self._trusted_prefixes = policy.trusted_prefixes  # computed once: checked on every request
        self.requests = 0
        self.bytes_received = 0

    async def __aenter__(self) -> "Fetcher":
        connector = aiohttp.TCPConnector(
            limit=max(1, self.crawl.concurrency),
            limit_per_host=max(1, self.crawl.per_host),
            resolver=PolicyResolver(self.policy),
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.crawl.timeout_s, sock_read=self.crawl.timeout_s),
            headers={"User-Agent": self.crawl.user_agent, "Accept": "application/json"},
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),  # mirrors get no state from us
        )
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, validators: Validators | None = None) -> Response:
        """GET with retries.  Never raises for anything a server or the network does."""
        if not url.startswith(self._trusted_prefixes):
            try:
                self.policy.check(url)
            except PolicyError as exc:
                return Response(Fetched(Retrieval.UNREACHABLE, url, detail=f"refused by policy: {exc}", code="refused_by_policy"))
        try:
            # Most requests succeed at once: the retry machinery starts at the first failure.
            return await self._get_once(url, validators)
        except _Retryable as exc:
            if self.crawl.retries == 0:
                return self._gave_up(url, exc, 1)
            replay = [exc]
        attempts = 0

        async def attempt_once() -> Response:
            # tenacity's first attempt is the failure we already have, so it counts the attempts
            # and computes every wait (Retry-After, backoff with jitter) itself.
            if replay:
                raise replay.pop()
            return await self._get_once(url, validators)

        def wait(state: RetryCallState) -> float:
            if self.breaker.is_open(_origin_key(url)):
                return 0.0  # the next attempt fails fast: no point sleeping first
            exc = state.outcome.exception() if state.outcome else None
            backoff = wait_random_exponential(multiplier=0.5, max=self.crawl.backoff_max_s)(state)
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                return min(max(exc.retry_after, 0.0), self.crawl.backoff_max_s)
            return backoff

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.crawl.retries + 1),
            wait=wait,
            retry=retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = await attempt_once()
                    return Response(response.fetched, response.status, response.validators, response.not_modified, attempts, response.wire_bytes)
        except _Retryable as exc:
            return self._gave_up(url, exc, attempts)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _gave_up(url: str, exc: _Retryable, attempts: int) -> Response:
        detail = f"{exc.fetched.detail} (after {attempts} attempt{'s' if attempts > 1 else ''})"
        return Response(Fetched(Retrieval.UNREACHABLE, url, detail=detail, code=exc.fetched.code), attempts=attempts)

    async def _get_once(self, url: str, validators: Validators | None) -> Response:
        origin = _origin_key(url)
        if not self.breaker.allows(origin):
            detail = f"not tried: the mirror failed to connect or answer {self.breaker.failures(origin)} requests in a row in this run (tried again every {self.breaker.retry_s:g}s)"
            return Response(Fetched(Retrieval.UNREACHABLE, url, detail=detail, code="mirror_down"))
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
                return await self._follow(url, validators)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # TimeoutError is an OSError: the deadline's own (asyncio.timeout raises it only when
            # it cut the request; an outside cancellation stays a cancellation), or aiohttp's read
            # or connect timeout.  ValueError: aiohttp rejects some malformed responses that way.
            if deadline.expired():
                detail = f"no complete response within the deadline of {self.crawl.deadline_s:g}s"
                fetched = Fetched(Retrieval.UNREACHABLE, url, detail=detail, code="deadline_exceeded")
            else:
                code, detail = _describe(exc)
                fetched = Fetched(Retrieval.UNREACHABLE, url, detail=detail, code=code)
            raise _Retryable(fetched) from None

    async def _follow(self, url: str, validators: Validators | None) -> Response:
        headers = {}
        if validators is not None:
            if validators.etag:
                headers["If-None-Match"] = validators.etag
            if validators.last_modified:
                headers["If-Modified-Since"] = validators.last_modified
        current = url
        for _ in range(self.crawl.max_redirects + 1):
            async with self._session.get(current, headers=headers, allow_redirects=False) as resp:
                if resp.status in (301, 302, 303, 307, 308):
                    location = resp.headers.get("Location", "")
                    target = urljoin(current, location)
                    try:
                        if not self._same_origin(url, target):
                            self.policy.check(target)
                    except PolicyError as exc:
                        return Response(Fetched(Retrieval.UNREACHABLE, url, detail=f"redirect to {target[:200]!r} refused: {exc}", code="redirect_refused"), resp.status)
                    current = target
                    headers = {}  # validators belong to the URL they were given for
                    continue
                return await self._read(url, resp)
        return Response(Fetched(Retrieval.UNREACHABLE, url, detail=f"more than {self.crawl.max_redirects} redirects", code="too_many_redirects"))

    def _same_origin(self, a: str, b: str) -> bool:
        try:
            return UrlPolicy.origin(a) == UrlPolicy.origin(b) and self.policy.is_trusted(a)
        except PolicyError:
            return False

    async def _read(self, url: str, resp: aiohttp.ClientResponse) -> Response:
        status = resp.status
        v = Validators(resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
        if status == 304:
            return Response(Fetched(Retrieval.FOUND, url, detail="not modified"), status, v, not_modified=True)
        if status == 404 or status == 410:
            return Response(Fetched(Retrieval.NOT_FOUND, url, detail=f"HTTP {status}"), status)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._clock())
            detail = f"HTTP {status}" + (f" (Retry-After {retry_after:g}s)" if retry_after is not None else "")
            raise _Retryable(Fetched(Retrieval.UNREACHABLE, url, detail=detail, code="rate_limited" if status == 429 else "server_error"), retry_after)
        if status != 200:
            return Response(Fetched(Retrieval.UNREACHABLE, url, detail=f"HTTP {status}", code="http_status"), status)
        cap = self.crawl.max_bytes
        declared = resp.content_length
        if declared is not None and declared > cap and "Content-Encoding" not in resp.headers:
            return Response(Fetched(Retrieval.UNUSABLE, url, detail=f"Content-Length {declared} exceeds the {cap}-byte cap", code="too_large"), status)
        if declared is not None and "Content-Encoding" not in resp.headers and "Transfer-Encoding" not in resp.headers:
            # aiohttp reads exactly the declared length (within the cap, checked above), and
            # fails a shorter body: one read instead of the chunk loop.  Not when the response
            # is also chunked: then the declared length would bound nothing.
            body = await resp.read()
            size = len(body)
        else:  # chunked or compressed: the cap counts decoded bytes as they arrive
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > cap:
                    return Response(Fetched(Retrieval.UNUSABLE, url, detail=f"body exceeds the {cap}-byte cap (after decoding)", code="too_large"), status)
                chunks.append(chunk)
            body = b"".join(chunks)
        self.bytes_received += size
        return Response(Fetched(Retrieval.FOUND, url, body=body), status, v, wire_bytes=size)
