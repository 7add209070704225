"""Which URLs may be fetched: the safety policy, decided from the URL and again at resolution.

Configured mirrors are always contacted.  Discovered URLs and every redirect go only over https
to public addresses, unless the crawl's allow_http / allow_private say otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from pithsync.config import CrawlConfig

MAX_URL_CHARS = 4096
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `ip` is a public unicast address (an IPv4-mapped IPv6 address counts as its IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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
        """(scheme, host, port) of `url`, lower-cased, the port filled in from the scheme.

        Raises:
            PolicyError: the port is not a number in range.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port or _default_port(scheme)
        except ValueError:
            raise PolicyError(f"bad port in {url[:200]!r}") from None
        return (scheme, (parts.hostname or "").lower(), port)

    @classmethod
    def for_mirrors(cls, base_urls: Iterable[str], crawl: CrawlConfig) -> UrlPolicy:
        """The policy of a run whose configured mirrors are at `base_urls`.

        Args:
            base_urls: the configured mirrors' base URLs (their origins are trusted).
            crawl: the crawl settings (allow_http, allow_private).

        Returns:
            The policy.
        """
        origins = frozenset(cls.origin(u) for u in base_urls)
        return cls(origins, crawl.allow_http, crawl.allow_private)

    @property
    def trusted_prefixes(self) -> tuple[str, ...]:
        """URL prefixes inside configured mirrors, with the port written or (when it is the
        scheme's default) left out: URLs built from a configured base need no check (the
        redirects they lead to still get one)."""
        origins = self.trusted_origins
        explicit = [f"{scheme}://{host}:{port}/" for scheme, host, port in origins]
        implicit = [
            f"{scheme}://{host}/" for scheme, host, port in origins if port == _default_port(scheme)
        ]
        return tuple(explicit + implicit)

    def is_trusted(self, url: str) -> bool:
        """Whether `url` is on a configured mirror's origin."""
        try:
            return self.origin(url) in self.trusted_origins
        except PolicyError:
            return False

    def check(self, url: str) -> None:
        """Refuse `url` unless it may be fetched.  Decided from the URL alone: nothing is
        resolved or connected to here.

        Raises:
            PolicyError: saying why the URL is refused.
        """
        if len(url) > MAX_URL_CHARS:
            raise PolicyError(f"URL longer than {MAX_URL_CHARS} characters")
        scheme, host, port = self.origin(url)
        if scheme not in ("http", "https"):
            raise PolicyError(f"scheme {scheme or '(none)'!r} is not http(s)")
        if not host:
            raise PolicyError("URL has no host")
        if (scheme, host, port) in self.trusted_origins:
            return
        ip = ip_literal(host)
        # The address first: "10.0.0.1 is not public" says more than "http is refused".
        if not self.allow_private:
            if ip is not None and not is_public(ip):
                raise PolicyError(f"address {ip} is not public (allow_private = false)")
            if ip is None and (host == "localhost" or host.endswith(_LOCAL_SUFFIXES)):
                raise PolicyError(f"host {host!r} is not public (allow_private = false)")
        if scheme != "https" and not self.allow_http:
            raise PolicyError(f"{scheme}:// is refused for discovered URLs (allow_http = false)")
        # Other names are checked again when resolved (PolicyResolver).

    def trusted_hosts(self) -> frozenset[str]:
        """The host names of the configured mirrors."""
        return frozenset(h for _, h, _ in self.trusted_origins)


class PolicyResolver(AbstractResolver):
    """Drops private addresses for hosts that are not configured mirrors, so a public-looking
    name cannot resolve (or rebind) to the inside of the network."""

    def __init__(self, policy: UrlPolicy, inner: AbstractResolver | None = None):
        self._policy = policy
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses `host` resolves to, without the non-public ones unless it is trusted.

        Args:
            host: the name to resolve.
            port: the port the results carry.
            family: the address family asked for.

        Returns:
            The addresses that may be connected to.

        Raises:
            OSError: `host` resolves only to non-public addresses (or does not resolve).
        """
        results = await self._inner.resolve(host, port, family)
        if self._policy.allow_private or host.lower() in self._policy.trusted_hosts():
            return results
        public = [r for r in results if is_public(ipaddress.ip_address(r["host"]))]
        if not public:
            raise OSError(f"{host} resolves only to non-public addresses")
        return public

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()
