"""Hostile and broken mirrors (issue 6): nothing lost, nothing wrongly trusted.

Every fault is real on the wire (pithsync.testing.mirror.MirrorServer on 127.0.0.1).  Each case
runs one hostile mirror beside one healthy mirror serving the same forged record and checks:

* the hostile mirror gets a clear status and a machine-readable reason code (and message);
* the healthy mirror is `ok`, and the run finishes (no crash, no hang);
* the verified store holds exactly the honest documents, events and state: no hash of the
  hostile bytes is among the verified documents (bad copies go to `evidence` only);
* the wall time stays within a generous multiple of the configured timeouts;
* no connection ever leaves loopback (asserted by recording every socket connect).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import reliability_counts
from aiohttp.resolver import ThreadedResolver
from synctools import NoSleep, make_config, pull, statuses

from pithsync.core.canonical import canon, sha256hex
from pithsync.fetch import Fetcher, PolicyError, PolicyResolver, UrlPolicy
from pithsync.run.engine import SyncEngine
from pithsync.store import Store, bodies
from pithsync.testing import forge
from pithsync.testing.mirror import (
    HOSTILE_BODIES,
    MIB,
    MirrorServer,
    bundle_path,
    closed_port_url,
    refused_spec,
    state_path,
    well_known_path,
)

# Generous: the healthy mirror answers within them even on a loaded machine.  The tests of the
# timeouts themselves pass their own, far from what the fault does (a server that never answers).
LIMITS = {"timeout_s": 5.0, "deadline_s": 10.0, "retries": 1, "max_bytes": MIB}
SHORT_TIMEOUT = {"timeout_s": 2.0, "deadline_s": 5.0}

RECORD = forge.forge_record(61, n_events=3)
HONEST = RECORD.bundle()
HONEST_BYTES = forge.dumps(HONEST)
HONEST_STATE_BYTES = forge.dumps(HONEST["state"])
OTHER = forge.forge_record(62, n_events=2).bundle()


def budget(crawl: dict) -> float:
    """A generous bound on one run's wall time: every attempt may use its whole deadline, three
    times over (a loaded 2-core machine), plus start-up slack."""
    return 3 * (crawl["retries"] + 1) * crawl["deadline_s"] + 3.0


# -- the harness ------------------------------------------------------------------------------


@pytest.fixture
def connects(monkeypatch):
    """Every TCP connect the event loop makes, and every name the fetcher tries to resolve, as
    (host, port); anything off loopback and every DNS lookup is refused (so a test can never reach
    the internet, and its assertions can see that something tried)."""
    seen: list[tuple[str, int]] = []

    def install():
        cls = type(asyncio.get_running_loop())
        original = cls.sock_connect

        async def sock_connect(self, sock, address):
            seen.append((address[0], address[1]))
            if not ipaddress.ip_address(address[0]).is_loopback:
                raise ConnectionRefusedError(f"test: refusing to connect off loopback to {address}")
            return await original(self, sock, address)

        monkeypatch.setattr(cls, "sock_connect", sock_connect)

        async def resolve(self, host, port=0, family=0):
            seen.append((f"dns:{host}", port))
            raise OSError(f"test: no DNS lookups ({host})")

        monkeypatch.setattr(ThreadedResolver, "resolve", resolve)
        return seen

    return install


@dataclass
class Outcome:
    result: object
    wall: float
    waits: list[float]
    cfg: object
    bad: MirrorServer
    crawl: dict

    def mirror(self, name: str):
        (m,) = [m for m in self.result.mirrors if m.name == name]
        return m


async def run_case(
    tmp_path, setup=None, *, honest: dict = HONEST, bad_spec=None, **crawl
) -> Outcome:
    crawl = {**LIMITS, **crawl}
    async with MirrorServer("good") as good, MirrorServer("bad") as bad:
        good.put_record(honest)
        bad.put_record(honest)
        if setup is not None:
            setup(bad)
        cfg = make_config(tmp_path, [good.spec(), bad_spec or bad.spec()], **crawl)
        sleep = NoSleep()
        started = time.monotonic()
        results = await pull(cfg, honest["pith_number"], sleep=sleep)
        wall = time.monotonic() - started
    return Outcome(results[honest["pith_number"]], wall, sleep.waits, cfg, bad, crawl)


def assert_store_honest(
    db_path: str, honest: dict = HONEST, hostile: tuple[bytes, ...] = ()
) -> None:
    """The verified tables hold the honest copy and nothing else."""
    honest_docs = {
        sha256hex(forge.dumps(honest)): "bundle",
        sha256hex(forge.dumps(honest["state"])): "state",
    }
    with sqlite3.connect(db_path) as conn:
        docs = {
            sha: (kind, bodies.expand(blob))
            for sha, kind, blob in conn.execute("select sha256, kind, body from documents")
        }
        events = {
            eid: bodies.expand_text(blob)
            for eid, blob in conn.execute("select event_id, body from events")
        }
        rows = [
            (pith, bodies.expand_text(state), sha)
            for pith, state, sha in conn.execute(
                "select pith_number, state, state_sha256 from records"
            )
        ]
    assert {sha: kind for sha, (kind, _) in docs.items()} == honest_docs
    for sha, (_, body) in docs.items():
        assert sha256hex(body) == sha  # content-addressed for real
    for data in hostile:
        assert sha256hex(data) not in docs, "hostile bytes in the verified documents"
    assert set(events) == {e["event_id"] for e in honest["events"]}
    for ev in honest["events"]:
        assert events[ev["event_id"]] == canon(ev).decode()
    assert len(rows) == 1 and rows[0][0] == honest["pith_number"]
    assert json.loads(rows[0][1]) == honest["state"]
    assert rows[0][2] == honest["state"]["state_sha256"]
    store = Store.open(db_path)
    try:
        assert store.verify_journal() == []
    finally:
        store.close()


def check(
    out: Outcome,
    fault: str,
    status: str,
    code: str,
    message: str | None = None,
    hostile: tuple[bytes, ...] = (),
    honest: dict = HONEST,
) -> dict:
    """The common assertions; returns the bad mirror's matching reason."""
    res = out.result
    good, bad = out.mirror("good"), out.mirror("bad")
    assert good.status.value == "ok" and good.reasons == [], good.reasons
    assert bad.status.value == status, bad.reasons
    matching = [r for r in bad.reasons if r["status"] == status and r["code"] == code]
    assert matching, bad.reasons
    if message is not None:
        assert any(message in r["message"] for r in matching), matching
    assert res.verdict.value == ("degraded" if status == "unreachable" else "diverged")
    assert out.wall < budget(out.crawl), f"{fault}: run took {out.wall:.1f}s"
    assert_store_honest(out.cfg.db_path, honest, hostile)
    reliability_counts.observe(fault, status, code, matching[0]["message"])
    reliability_counts.add("faults")
    return matching[0]


def evidence_shas(db_path: str) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        return {
            r[0]
            for r in conn.execute("select body_sha256 from evidence where body_sha256 is not null")
        }


# -- the network ------------------------------------------------------------------------------


async def test_connection_refused(tmp_path, connects):
    seen = connects()
    down = refused_spec("bad")
    out = await run_case(tmp_path, bad_spec=down)
    check(out, "connection refused", "unreachable", "connection_refused", "connection refused")
    assert len(out.waits) == 2  # retried once, bundle and state
    port = int(down.base_url.rsplit(":", 1)[1])
    assert sum(1 for _, p in seen if p == port) == 4  # 2 documents x 2 attempts, each refused


async def test_connection_dropped_before_response(tmp_path):
    out = await run_case(tmp_path, lambda b: b.fault("drop"))
    check(
        out,
        "connection closed before any response",
        "unreachable",
        "connection_closed",
        "closed the connection",
    )
    assert (
        2 <= out.bad.count(bundle_path(RECORD.suffix)) <= 4
    )  # 2 attempts (aiohttp may resend an idempotent GET once each)


async def test_reset_mid_body(tmp_path):
    out = await run_case(tmp_path, lambda b: b.fault("reset"))
    check(
        out,
        "TCP reset mid-body",
        "unreachable",
        "connection_reset",
        "reset in the middle of the body",
        hostile=(HONEST_BYTES[: len(HONEST_BYTES) // 2],),
    )
    assert all(
        r.bytes_sent > 0 for r in out.bad.requests if r.fault == "reset"
    )  # part of the body did go out


@pytest.mark.parametrize("status", [500, 502, 503])
@pytest.mark.parametrize("retry_after", [None, "7", "date", "999999"])
async def test_server_errors_retried_with_retry_after(tmp_path, status, retry_after):
    header = retry_after
    if retry_after == "date":
        header = email.utils.format_datetime(
            datetime.now(UTC) + timedelta(seconds=120), usegmt=True
        )
    out = await run_case(tmp_path, lambda b: b.fault("status", status=status, retry_after=header))
    reason = check(
        out,
        f"HTTP {status}" + (f", Retry-After {retry_after}" if retry_after else ""),
        "unreachable",
        "server_error",
        f"HTTP {status}",
    )
    assert "after 2 attempts" in reason["message"]
    for path in (bundle_path(RECORD.suffix), state_path(RECORD.suffix)):
        assert out.bad.count(path, status=status) == 2  # one retry each, then given up
    assert len(out.waits) == 2  # no real sleep: NoSleep recorded what tenacity asked for
    if retry_after == "7":
        assert out.waits == [7.0, 7.0]
    elif retry_after in ("date", "999999"):
        assert out.waits == [30.0, 30.0]  # honoured, but capped at backoff_max_s
    else:
        assert all(0 <= w <= 30.0 for w in out.waits)


@pytest.mark.parametrize(
    "header, why",
    [
        ("1 Jan 10000000000000000000000 00:00:00 GMT", "the year overflows the date parser"),
        ("\u00b2", "a digit to str.isdigit, not to float"),
        ("-5", "negative"),
        ("soon", "not a number or a date"),
    ],
)
async def test_an_unreadable_retry_after_is_ignored(tmp_path, header, why):
    # Before, the first escaped the fetcher (OverflowError) and the second was reported as a
    # network error: the mirror's answer was lost.
    out = await run_case(tmp_path, lambda b: b.fault("status", status=429, retry_after=header))
    check(out, f"HTTP 429, Retry-After {why}", "unreachable", "rate_limited", "HTTP 429")
    assert all(0 <= w <= 30.0 for w in out.waits) and len(out.waits) == 2  # plain backoff


async def test_429_rate_limited(tmp_path):
    out = await run_case(tmp_path, lambda b: b.fault("status", status=429, retry_after="3"))
    check(out, "HTTP 429, Retry-After 3", "unreachable", "rate_limited", "HTTP 429")
    assert out.waits == [3.0, 3.0]


async def test_hang_after_accept(tmp_path):
    out = await run_case(tmp_path, lambda b: b.fault("hang"), **SHORT_TIMEOUT)
    check(out, "accepts, never answers", "unreachable", "timeout", "read timeout")
    assert out.wall >= 2 * SHORT_TIMEOUT["timeout_s"] * 0.9  # it did wait for the timeout, twice


async def test_first_byte_later_than_the_timeout(tmp_path):
    out = await run_case(tmp_path, lambda b: b.fault("delay", seconds=30), **SHORT_TIMEOUT)
    check(out, "answers after 30 s", "unreachable", "timeout", "read timeout")


@pytest.mark.parametrize(
    "interval,timeout_s",
    [(1.0, 5.0), (0.05, 1.0)],
    ids=["1-byte-per-second", "20-bytes-per-second"],
)
async def test_trickle_cut_by_the_deadline(tmp_path, interval, timeout_s):
    # Each byte arrives well within the read timeout (5 or 20 times over), so only the overall
    # deadline can stop it; the whole body would take minutes to trickle out.
    fault = lambda b: b.fault("trickle", interval=interval)  # noqa: E731
    out = await run_case(tmp_path, fault, timeout_s=timeout_s, deadline_s=3.0)
    fault_name = f"trickle, one byte every {interval:g}s"
    check(out, fault_name, "unreachable", "deadline_exceeded", "deadline of 3s")
    assert out.wall >= 2 * 3.0 * 0.9
    assert all(r.bytes_sent < len(HONEST_BYTES) for r in out.bad.requests)


async def test_truncated_body(tmp_path):
    out = await run_case(tmp_path, lambda b: b.fault("truncated"))
    check(
        out,
        "truncated body (connection closed early)",
        "unreachable",
        "truncated_body",
        "before its declared length",
        hostile=(HONEST_BYTES[: len(HONEST_BYTES) // 2],),
    )


async def test_content_length_larger_than_body(tmp_path):
    out = await run_case(tmp_path, lambda b: b.fault("content_length_mismatch", delta=100))
    check(
        out,
        "Content-Length larger than the body",
        "unreachable",
        "truncated_body",
        "before its declared length",
    )


async def test_content_length_smaller_than_body(tmp_path):
    # The client takes the declared prefix as the whole body: it is not the document.
    out = await run_case(tmp_path, lambda b: b.fault("content_length_mismatch", delta=-100))
    check(
        out,
        "Content-Length smaller than the body",
        "malformed",
        "bundle_not_json",
        "not JSON",
        hostile=(HONEST_BYTES[:-100], HONEST_STATE_BYTES[:-100]),
    )
    assert sha256hex(HONEST_BYTES[:-100]) in evidence_shas(out.cfg.db_path)  # kept, as evidence


async def test_gzip_bomb_cut_at_the_size_cap(tmp_path):
    out = await run_case(tmp_path, lambda b: b.fault("gzip_bomb", expanded_bytes=64 * MIB))
    check(
        out,
        "gzip body expanding to 64 MiB (cap 1 MiB)",
        "malformed",
        "too_large",
        "1048576-byte cap",
    )
    sent = [r.bytes_sent for r in out.bad.requests if r.fault == "gzip_bomb"]
    assert sent and max(sent) < 1 * MIB  # small on the wire: the cap applied to the decoded size


async def test_declared_length_over_the_cap(tmp_path):
    big = b'{"padding":"' + b"x" * (2 * MIB) + b'"}'
    out = await run_case(tmp_path, lambda b: b.fault("body", data=big))
    check(
        out,
        "Content-Length over the size cap",
        "malformed",
        "too_large",
        "Content-Length",
        hostile=(big,),
    )


async def test_endless_chunked_body(tmp_path):
    out = await run_case(tmp_path, lambda b: b.fault("endless_chunked"))
    check(out, "endless chunked body", "malformed", "too_large", "cap")


async def test_endless_chunked_body_that_also_declares_a_small_length(tmp_path):
    # A small Content-Length beside chunked framing must not let the body past the cap: the
    # client either refuses the response or counts what it decodes.
    out = await run_case(tmp_path, lambda b: b.fault("endless_chunked", content_length=100))
    bad = out.mirror("bad")
    assert bad.status.value in ("malformed", "unreachable"), bad.reasons
    matching = [
        r for r in bad.reasons if r["code"] in ("too_large", "bad_response", "bad_transfer")
    ]
    assert matching, bad.reasons
    assert out.wall < budget(out.crawl)
    assert_store_honest(out.cfg.db_path, HONEST, ())
    reliability_counts.observe(
        "chunked body with a small Content-Length too",
        bad.status.value,
        matching[0]["code"],
        matching[0]["message"],
    )
    reliability_counts.add("faults")


# -- redirects ----------------------------------------------------------------------------------


async def test_redirect_loop(tmp_path):
    out = await run_case(tmp_path, lambda b: b.fault("redirect_loop"))
    check(out, "redirect loop", "unreachable", "too_many_redirects", "more than 5 redirects")
    assert (
        out.bad.count(bundle_path(RECORD.suffix), status=302) == out.cfg.crawl.max_redirects + 1
    )  # not retried


@pytest.mark.parametrize(
    "location,message",
    [
        ("http://10.0.0.1/x", "address 10.0.0.1 is not public"),
        ("https://10.0.0.1/x", "address 10.0.0.1 is not public"),
        ("http://167772161/x", "address 10.0.0.1 is not public"),  # 10.0.0.1 spelled as one number
        ("http://[::ffff:10.0.0.1]/x", "is not public"),
        ("http://169.254.169.254/latest/meta-data/", "address 169.254.169.254 is not public"),
        ("http://localhost/x", "'localhost' is not public"),
        ("file:///etc/passwd", "scheme 'file' is not http(s)"),
        ("ftp://127.0.0.1/x", "scheme 'ftp' is not http(s)"),
        (
            "CLOSED_PORT",
            "address 127.0.0.1 is not public",
        ),  # same host, another (unconfigured) port
    ],
)
async def test_redirect_refused_without_connecting(tmp_path, connects, location, message):
    seen = connects()
    if location == "CLOSED_PORT":
        location = closed_port_url() + "/x"
    out = await run_case(tmp_path, lambda b: b.fault("redirect", location=location))
    check(out, f"redirect to {location}", "unreachable", "redirect_refused", message)
    assert (
        out.bad.count(bundle_path(RECORD.suffix), status=302) == 1
    )  # a refusal is final: no retry
    # The recorder works (it saw the two mirrors) and nothing else was ever dialled.
    ports = {port for _, port in seen}
    assert ports == {int(u.rsplit(":", 1)[1]) for u in (m.base_url for m in out.cfg.mirrors)}
    assert all(host == "127.0.0.1" for host, _ in seen), seen


async def test_redirect_within_the_same_configured_origin_is_followed(tmp_path):
    def setup(bad):
        bad.fault(
            "redirect",
            path=bundle_path(RECORD.suffix),
            location=bad.url(well_known_path(RECORD.suffix)),
        )
        bad.put("/moved/state.json", HONEST_STATE_BYTES)
        bad.fault(
            "redirect", path=state_path(RECORD.suffix), location="/moved/state.json", status=301
        )

    out = await run_case(tmp_path, setup)
    assert out.mirror("bad").status.value == "ok", out.mirror("bad").reasons
    assert out.result.verdict.value == "in_sync"
    assert out.bad.count(bundle_path(RECORD.suffix), status=302) == 1
    assert out.bad.count(well_known_path(RECORD.suffix), status=200) == 1
    assert out.bad.count("/moved/state.json", status=200) == 1
    assert_store_honest(out.cfg.db_path)


# -- bodies -------------------------------------------------------------------------------------

BODY_CASES = {
    "html": (HOSTILE_BODIES["html"], "text/html", "begins with '<!doctype html>"),
    "plain text": (
        b"Service temporarily unavailable, try again later\n",
        "text/plain",
        "begins with 'Service temporarily",
    ),
    "invalid UTF-8": (HOSTILE_BODIES["invalid_utf8"], "application/json", "invalid UTF-8 at byte"),
    "nesting 100,000 deep": (
        HOSTILE_BODIES["deep_nesting"],
        "application/json",
        "nesting deeper than 64 levels",
    ),
    "number with 10,000 digits": (
        HOSTILE_BODIES["huge_number"],
        "application/json",
        "number with 10000 characters",
    ),
    "duplicate keys": (
        HOSTILE_BODIES["duplicate_keys"],
        "application/json",
        "duplicate object key 'bundle_type'",
    ),
    "NaN / Infinity": (HOSTILE_BODIES["nan"], "application/json", "non-finite number NaN"),
    "empty body": (HOSTILE_BODIES["empty"], "application/json", "empty document"),
    "JSON array": (
        HOSTILE_BODIES["json_array"],
        "application/json",
        "expected a JSON object, got an array",
    ),
    "JSON null": (
        HOSTILE_BODIES["json_null"],
        "application/json",
        "expected a JSON object, got null",
    ),
    "byte order mark": (b"\xef\xbb\xbf" + HONEST_BYTES, "application/json", "byte order mark"),
}


@pytest.mark.parametrize("name", list(BODY_CASES))
async def test_hostile_bodies(tmp_path, name):
    data, content_type, message = BODY_CASES[name]
    out = await run_case(tmp_path, lambda b: b.fault("body", data=data, content_type=content_type))
    check(out, name, "malformed", "bundle_not_json", message, hostile=(data,))
    assert sha256hex(data) in evidence_shas(out.cfg.db_path)  # kept apart, as evidence


# -- documents that parse but are not the record -------------------------------------------------


async def test_valid_document_for_another_pith_number(tmp_path):
    def setup(bad):
        bad.put_bundle(RECORD.suffix, forge.dumps(OTHER))
        bad.put_well_known(RECORD.suffix, forge.dumps(OTHER))
        bad.put_state(RECORD.suffix, forge.dumps(OTHER["state"]))

    out = await run_case(tmp_path, setup)
    check(
        out,
        "valid bundle of another pith number",
        "tampered",
        "wrong_record",
        OTHER["pith_number"],
        hostile=(forge.dumps(OTHER), forge.dumps(OTHER["state"])),
    )


async def test_state_json_of_another_bundle(tmp_path):
    out = await run_case(
        tmp_path, lambda b: b.put_state(RECORD.suffix, forge.dumps(OTHER["state"]))
    )
    check(
        out,
        "state.json of another record",
        "state_mismatch",
        "state_other_record",
        "state.json is for",
        hostile=(forge.dumps(OTHER["state"]),),
    )


async def test_state_json_of_an_older_bundle_of_the_same_record(tmp_path):
    older = forge.dumps(RECORD.bundle(upto=2)["state"])
    out = await run_case(tmp_path, lambda b: b.put_state(RECORD.suffix, older))
    check(
        out,
        "state.json of an older bundle of the record",
        "state_mismatch",
        "state_not_merge",
        "not the merge",
        hostile=(older,),
    )


async def test_record_missing_on_one_mirror(tmp_path):
    out = await run_case(tmp_path, lambda b: b.remove_record(RECORD.suffix))
    check(out, "404 while the other mirror has it", "missing", "not_found", "not found")


# -- hint floods ----------------------------------------------------------------------------------


def _flooded(hints: list[dict]) -> dict:
    # links.* point at a closed loopback port: a followed hint must never need DNS.
    return RECORD.bundle(mirror_hints=hints, base_url="http://127.0.0.1:9")


async def test_ten_thousand_hints_capped(tmp_path, connects):
    seen = connects()
    port = int(closed_port_url().rsplit(":", 1)[1])
    hints = [
        {"name": f"h{i}", "base_url": f"http://127.0.{i // 250}.{i % 250 + 2}:{port}"}
        for i in range(10_000)
    ]
    honest = _flooded(hints)
    cap = 3
    out = await run_case(
        tmp_path,
        honest=honest,
        follow_hints=True,
        allow_http=True,
        allow_private=True,
        max_discovered_mirrors=cap,
        max_bytes=2 * MIB,
    )
    res = out.result
    configured = {m.name: m.status.value for m in res.mirrors if m.configured}
    discovered = [m for m in res.mirrors if not m.configured]
    assert configured == {"good": "ok", "bad": "ok"}
    assert len(discovered) == cap
    assert all(
        m.status.value == "unreachable" and m.reasons[0]["code"] == "connection_refused"
        for m in discovered
    )
    assert len(res.refused_hints) <= 51 and "cap of 3" in res.refused_hints[0]["reason"]
    assert res.refused_hints[-1]["reason"].endswith("more refused")
    # At most the configured mirrors' host and the capped few were ever dialled.
    assert len({host for host, _ in seen}) <= 1 + cap
    assert res.verdict.value == "degraded"
    assert out.wall < budget(out.crawl)
    assert_store_honest(out.cfg.db_path, honest)
    reliability_counts.observe(
        "10,000 mirror hints (cap 3)",
        "unreachable",
        "connection_refused",
        f"{cap} discovered, {len(hints) - cap} refused: over the cap",
    )
    reliability_counts.add("faults")


async def test_ten_thousand_private_hints_refused_by_default_policy(tmp_path, connects):
    seen = connects()
    hints = [
        {"name": f"h{i}", "base_url": f"https://10.{i // 65536}.{i // 256 % 256}.{i % 256}"}
        for i in range(10_000)
    ]
    honest = _flooded(hints)
    out = await run_case(tmp_path, honest=honest, follow_hints=True, max_bytes=2 * MIB)
    res = out.result
    assert {m.name: m.status.value for m in res.mirrors} == {"good": "ok", "bad": "ok"}
    assert len(res.refused_hints) == 51
    assert all("not public" in h["reason"] for h in res.refused_hints[:50])
    assert all(host == "127.0.0.1" for host, _ in seen) and seen
    assert res.verdict.value == "in_sync"
    assert_store_honest(out.cfg.db_path, honest)
    reliability_counts.add("faults")


# -- the policy on its own (no sockets at all) -----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "https://10.0.0.1/",
        "https://167772161/",
        "https://0x0a000001/",
        "https://10.1/",
        "https://012.0.0.1/",
        "https://[::ffff:10.0.0.1]/",
        "https://[::1]/",
        "https://127.0.0.1/",
        "https://0.0.0.0/",
        "https://169.254.169.254/",
        "https://[fd00::1]/",
        "https://224.0.0.1/",
        "https://localhost/",
        "https://db.internal/",
    ],
)
def test_policy_refuses_private_addresses_in_every_spelling(url):
    policy = UrlPolicy(frozenset())
    with pytest.raises(PolicyError, match="not public"):
        policy.check(url)
    UrlPolicy(frozenset(), allow_http=True, allow_private=True).check(
        url
    )  # the switch does open it


@pytest.mark.parametrize(
    "url", ["https://93.184.216.34/x", "https://mirror.example.org/pith/x/bundle.json"]
)
def test_policy_allows_public_https(url):
    UrlPolicy(frozenset()).check(url)
    with pytest.raises(PolicyError, match="allow_http"):
        UrlPolicy(frozenset()).check(url.replace("https:", "http:"))


async def test_resolver_drops_private_answers_for_untrusted_names():
    class Fake:
        async def resolve(self, host, port=0, family=0):
            return [
                {
                    "hostname": host,
                    "host": "10.0.0.7",
                    "port": port,
                    "family": 2,
                    "proto": 0,
                    "flags": 0,
                }
            ]

        async def close(self):
            pass

    policy = UrlPolicy(frozenset({("http", "mirror.local", 80)}))
    resolver = PolicyResolver(policy, Fake())
    with pytest.raises(OSError, match="non-public"):
        await resolver.resolve("rebinding.example.org", 443)
    assert (await resolver.resolve("mirror.local", 80))[0][
        "host"
    ] == "10.0.0.7"  # configured: trusted


# -- a mirror that is down for the whole run ---------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_again():
    from pithsync.fetch import MirrorBreaker

    clock = FakeClock()
    b = MirrorBreaker(after=3, retry_s=30, clock=clock)
    a, other = "http://127.0.0.1:1", "http://127.0.0.1:2"
    b.record(a, "connection_refused")
    b.record(a, "timeout")
    b.record(a, None)  # any answer in between starts the count again
    b.record(a, "connection_refused")
    b.record(a, "connect_timeout")
    assert b.allows(a) and not b.is_open(a)
    b.record(a, "server_error")  # an answer, however bad: the mirror is up
    for _ in range(3):
        b.record(a, "deadline_exceeded")
    assert b.is_open(a) and not b.allows(a) and b.failures(a) == 3
    assert b.allows(other), "one mirror down says nothing about another"
    clock.now += 29.9
    assert not b.allows(a)
    clock.now += 0.2
    assert b.allows(a), "a probe is due"
    assert not b.allows(a), "one probe at a time"
    b.record(a, "connection_refused")  # the probe failed: closed for another retry_s
    clock.now += 29.9
    assert not b.allows(a)
    clock.now += 0.2
    assert b.allows(a)
    b.record(a, None)  # the probe was answered
    assert b.allows(a) and b.allows(a) and not b.is_open(a) and b.failures(a) == 0


def test_breaker_disabled_with_zero():
    from pithsync.fetch import MirrorBreaker

    b = MirrorBreaker(after=0, retry_s=30, clock=FakeClock())
    for _ in range(100):
        b.record("http://x", "connection_refused")
    assert b.allows("http://x")


@pytest.mark.parametrize("down_after", [0, 6])
async def test_a_mirror_down_for_the_whole_run_is_skipped_after_a_few_failures(
    tmp_path, connects, down_after
):
    # Without the breaker every request to a down mirror waits out its retries: 4 attempts and
    # 3 backoff sleeps for each of 2 documents of every record.  With it, the run stops trying
    # after a handful; the records still say which mirror was unreachable, and why.
    seen = connects()
    down = refused_spec("down")
    records = [forge.forge_record(300 + i, n_events=1).bundle() for i in range(24)]
    async with MirrorServer("good") as good:
        for b in records:
            good.put_record(b)
        cfg = make_config(
            tmp_path,
            [good.spec(), down],
            retries=3,
            mirror_down_after=down_after,
            per_host=4,
            concurrency=8,
        )
        sleep = NoSleep()
        results = await pull(cfg, *(b["pith_number"] for b in records), sleep=sleep)
    port = int(down.base_url.rsplit(":", 1)[1])
    attempts = sum(1 for _, p in seen if p == port)
    codes = [r.mirrors[1].reasons[0]["code"] for r in results.values()]
    assert all(
        r.verdict.value == "degraded" and statuses(r) == {"good": "ok", "down": "unreachable"}
        for r in results.values()
    )
    if down_after == 0:
        assert attempts == 24 * 2 * 4 and len(sleep.waits) == 24 * 2 * 3
        assert set(codes) == {"connection_refused"}
    else:
        # Requests already on their way when the breaker opened still fail on their own: at
        # most one attempt per request in flight (never more than `concurrency`).
        assert down_after <= attempts <= down_after + cfg.crawl.concurrency, attempts
        assert len(sleep.waits) <= attempts
        assert codes.count("mirror_down") >= 24 - (down_after + cfg.crawl.concurrency)
        detail = next(
            r.mirrors[1].reasons[0]["message"]
            for r in results.values()
            if r.mirrors[1].reasons[0]["code"] == "mirror_down"
        )
        assert "in a row" in detail


async def test_an_outside_cancellation_of_a_request_stays_a_cancellation(tmp_path):
    # A run stopped from outside (Ctrl-C, a worker's shutdown) while a request trickles in must
    # end as a cancellation, not as a failed attempt that the retries would then wait out.
    async with MirrorServer("slow") as slow:
        slow.put_record(HONEST)
        slow.fault("trickle", interval=1.0)
        cfg = make_config(tmp_path, [slow.spec()], timeout_s=30.0, deadline_s=60.0, retries=3)
        url = slow.url(bundle_path(RECORD.suffix))
        async with Fetcher(cfg.crawl, SyncEngine.policy_for(cfg), sleep=NoSleep()) as fetcher:
            request = asyncio.get_running_loop().create_task(fetcher.get(url))
            for _ in range(200):  # until the request is on the wire (at most 20 s)
                if slow.requests:
                    break
                await asyncio.sleep(0.1)
            assert slow.requests, "the request never reached the server"
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
        assert fetcher.requests == 1  # not retried
