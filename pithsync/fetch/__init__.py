"""The one HTTP client: bounded, polite, retrying, and suspicious.

Every URL a mirror or hint names passes `UrlPolicy` first, and every redirect is checked again;
bodies are read as a stream and cut off at the size cap (after gzip/deflate decoding);
validators make a re-sync of an unchanged mirror cost a 304.

    policy.py   which URLs may be fetched (UrlPolicy, PolicyResolver, PolicyError)
    breaker.py  MirrorBreaker: a mirror that is down stops costing every record its retries
    budget.py   HostBudgets: [crawl] max_requests_per_s per host, paused by Retry-After
    client.py   Fetcher (timeouts, deadline, retries, size cap), Response, Validators
    errors.py   aiohttp's and the OS's exceptions as reason codes
"""

from pithsync.fetch.breaker import MirrorBreaker
from pithsync.fetch.client import Fetcher, Response, Validators
from pithsync.fetch.policy import PolicyError, PolicyResolver, UrlPolicy

__all__ = [
    "Fetcher",
    "MirrorBreaker",
    "PolicyError",
    "PolicyResolver",
    "Response",
    "UrlPolicy",
    "Validators",
]
