"""Configuration: embedded defaults, optionally replaced by a TOML file.  No globals: `load()`
returns a frozen Config that is passed to whatever needs it."""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pithsync import __version__
from pithsync.core.errors import InvalidKey
from pithsync.core.keys import PinnedKey, TrustStore
from pithsync.core.note import VerifierKey
from pithsync.core.schedule import DAY, HOUR, SchedulePolicy
from pithsync.core.strictjson import DEFAULT_MAX_BYTES
from pithsync.core.urls import MirrorSpec

DEFAULT_MIRRORS = (MirrorSpec(name="Pith Resolver", base_url="https://pith.science"),)


class ConfigError(Exception):
    """The configuration cannot be used (exit 2)."""


@dataclass(frozen=True)
class CrawlConfig:
    concurrency: int = 64  # requests in flight overall
    per_host: int = 16  # requests in flight per host
    processes: int = 0  # sync worker processes; 0: one per CPU for large runs (run/workers.py)
    timeout_s: float = 10.0  # connect and per-read timeout
    deadline_s: float = 60.0  # overall deadline for one fetch, retries excluded
    retries: int = 3  # attempts after the first, for connection errors, timeouts, 429, 5xx
    backoff_max_s: float = 30.0
    mirror_down_after: int = (
        8  # consecutive failed connections/timeouts before a mirror is skipped; 0: never
    )
    mirror_retry_s: float = 30.0  # while skipped, one request per this many seconds tries it again
    max_bytes: int = DEFAULT_MAX_BYTES
    follow_hints: bool = True
    allow_http: bool = False  # for discovered URLs; configured mirrors may be http
    allow_private: bool = False
    max_discovered_mirrors: int = 8  # per record
    max_redirects: int = 5
    max_requests_per_s: float | None = None  # per host (scheme, host, port); None: no limit
    user_agent: str = f"pithsync/{__version__} (+https://pith.science)"


@dataclass(frozen=True)
class AlertsConfig:
    webhook_url: str | None = None
    command: tuple[str, ...] = ()
    log: bool = True
    unreachable_runs: int = 3


@dataclass(frozen=True)
class MetricsConfig:
    textfile: str | None = None


DEFAULT_PEER_WINDOW_S = 86400.0  # one day


@dataclass(frozen=True)
class PeerSpec:
    """Another pithsync observer whose log this one checks (`[[peers]]`).

    Args:
        name: shown in findings, alerts and the journal.
        url: the observer's base URL (its `log/` is below it).
        observer_key: its pinned C2SP verifier key; the key's name is its log's origin.
        window_s: statements of the two observers further apart than this are not compared.
    """

    name: str
    url: str
    observer_key: VerifierKey
    window_s: float = DEFAULT_PEER_WINDOW_S


@dataclass(frozen=True)
class ScheduleConfig:
    """When `sync` re-checks each record (core.schedule), and how long a run may take."""

    min_interval: float = HOUR  # seconds: a changed or troubled record returns after this
    max_interval: float = 7 * DAY  # seconds: every record is re-checked at least this often
    run_budget_s: float | None = None  # a sync stops taking records after this; None: no limit

    def policy(self) -> SchedulePolicy:
        """The revisit rules these intervals give."""
        return SchedulePolicy(min_interval=self.min_interval, max_interval=self.max_interval)


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": HOUR, "d": DAY}


def parse_duration(value: object, where: str) -> float:
    """Seconds from a number of seconds or a string such as "90", "30m", "1h", "7d", "1.5h".

    Raises:
        ConfigError: not a finite duration greater than 0 (named by `where`).
    """
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower()
        unit = _DURATION_UNITS.get(text[-1])
        number = text[:-1] if unit is not None else text
        try:
            seconds = float(number) * (unit or 1.0)
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(
            f"{where} must be a duration greater than 0: seconds, or a number with s, m, h or d"
            f" (30m, 1h, 7d), not {str(value)[:40]!r}"
        )
    return seconds


def _schedule(table: dict) -> ScheduleConfig:
    _refuse_unknown(table, ScheduleConfig.__dataclass_fields__, "[schedule]")
    values = {k: parse_duration(v, f"[schedule] {k}") for k, v in table.items()}
    cfg = ScheduleConfig(**values)
    if cfg.min_interval > cfg.max_interval:
        raise ConfigError("[schedule] min_interval must not be longer than max_interval")
    return cfg


@dataclass(frozen=True)
class ObserverConfig:
    """`[observer]`: name: the observer key's name (its log's origin) when the key is made."""

    name: str | None = None


@dataclass(frozen=True)
class Config:
    trust: TrustStore
    mirrors: tuple[MirrorSpec, ...] = DEFAULT_MIRRORS
    peers: tuple[PeerSpec, ...] = ()
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    observer: ObserverConfig = field(default_factory=ObserverConfig)
    db_path: str = "pithsync.db"
    lock_timeout_s: float = 30.0
    source: str = "<embedded defaults>"


def default_db_path() -> str:
    state_dir = os.environ.get("STATE_DIRECTORY")  # set by systemd's StateDirectory=
    return str(Path(state_dir.split(":")[0]) / "pithsync.db") if state_dir else "pithsync.db"


def _refuse_unknown(found, known, where: str) -> None:
    """A ConfigError for keys the configuration does not define, each with the nearest known
    key when one is close (a typo): `unknown key [crawl] max_byte; did you mean max_bytes?`."""
    unknown = sorted(set(found) - set(known))
    if not unknown:
        return
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        suggestion = (close[0] if where else f"[{close[0]}]") if close else None
        hint = f"did you mean {suggestion}?" if suggestion else ""
        named.append((f"{where} {key}" if where else f"[{key}]", hint))
    if len(named) == 1:
        what, hint = named[0]
        label = "unknown key" if where else "unknown section"
        raise ConfigError(f"{label} {what}" + (f"; {hint}" if hint else ""))
    label = "unknown keys: " if where else "unknown sections: "
    raise ConfigError(label + ", ".join(f"{w} ({h})" if h else w for w, h in named))


def _section(data: dict, name: str) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


# Where 0 would not mean what it says: aiohttp reads a timeout of 0 as "no timeout", and a
# deadline of 0 would cut every request at the first check.
_POSITIVE: dict[type, dict[str, str]] = {
    CrawlConfig: {
        "timeout_s": "0 would turn the timeout off",
        "deadline_s": "0 would cut every request at once",
    },
}


# Numbers whose default None means "no limit": when set, they must be greater than 0.
_LIMITS: dict[type, dict[str, str]] = {
    CrawlConfig: {"max_requests_per_s": "requests a second to each host; leave it out for none"},
}


def _limit(value: object, where: str, meaning: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{where} must be a number greater than 0 ({meaning}), not {value!r}")
    return float(value)


def _dataclass_from(cls, table: dict, where: str):
    _refuse_unknown(table, cls.__dataclass_fields__, f"[{where}]")
    defaults = cls()
    values = {}
    limits = _LIMITS.get(cls, {})
    for key, value in table.items():
        expected = type(getattr(defaults, key))
        if key in limits:
            values[key] = _limit(value, f"[{where}] {key}", limits[key])
            continue
        if expected is tuple:
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"[{where}] {key} must be a list of strings")
            value = tuple(value)
        elif getattr(defaults, key) is None:
            if not isinstance(value, str):
                raise ConfigError(f"[{where}] {key} must be a string")
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"[{where}] {key} must be {expected.__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"[{where}] {key} must be a finite number, not {value}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"[{where}] {key} must not be negative")
        if key in _POSITIVE.get(cls, ()) and value == 0:
            raise ConfigError(f"[{where}] {key} must be greater than 0 ({_POSITIVE[cls][key]})")
        values[key] = value
    return cls(**values)


def _configured_base(value: str, where: str) -> str:
    """A configured base URL without its trailing slash: http(s) only (plain http is allowed
    for what the operator configures, never for discovered URLs)."""
    base = value.rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise ConfigError(f"{where} must be http(s): {base!r}")
    return base


def _mirror(table: object, i: int) -> MirrorSpec:
    if not isinstance(table, dict) or not isinstance(table.get("base_url"), str):
        raise ConfigError(f"[[mirrors]] entry {i}: base_url (a string) is required")
    base = _configured_base(table["base_url"], f"[[mirrors]] entry {i}: base_url")
    allowed = {"name", "base_url", "bundle_pattern", "state_pattern", "well_known_pattern"}
    _refuse_unknown(table, allowed, f"[[mirrors]] entry {i}:")
    kwargs = {k: v for k, v in table.items() if k in allowed and k != "base_url"}
    if not all(isinstance(v, str) for v in kwargs.values()):
        raise ConfigError(f"[[mirrors]] entry {i}: values must be strings")
    kwargs.setdefault("name", base)
    return MirrorSpec(base_url=base, **kwargs)


def _peer(table: object, i: int) -> PeerSpec:
    where = f"[[peers]] entry {i}:"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    _refuse_unknown(table, {"name", "url", "observer_key", "window_s"}, where)
    for key in ("name", "url", "observer_key"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError(f"{where} {key} (a non-empty string) is required")
    url = _configured_base(table["url"], f"{where} url")
    try:
        key = VerifierKey.parse(table["observer_key"])
    except InvalidKey as exc:
        raise ConfigError(f"{where} observer_key is not a C2SP verifier key: {exc}") from None
    window = _non_negative(table.get("window_s", DEFAULT_PEER_WINDOW_S), f"{where} window_s")
    return PeerSpec(table["name"], url, key, window)


def _peers(value: object) -> tuple[PeerSpec, ...]:
    if not isinstance(value, list):
        raise ConfigError("peers must be an array of tables ([[peers]]), window_s in each")
    peers = tuple(_peer(p, i) for i, p in enumerate(value))
    for what, key in (("name", lambda p: p.name), ("url", lambda p: p.url.lower())):
        seen: dict[str, int] = {}
        for i, p in enumerate(peers):
            if key(p) in seen:
                raise ConfigError(f"[[peers]] entries {seen[key(p)]} and {i} have the same {what}")
            seen[key(p)] = i
    return peers


def _trust(table: dict) -> TrustStore:
    _refuse_unknown(table, {"keys"}, "[trust]")
    keys = table.get("keys")
    if not isinstance(keys, list) or not keys:
        raise ConfigError("[trust] needs at least one [[trust.keys]] entry")
    pinned = []
    for i, k in enumerate(keys):
        if (
            not isinstance(k, dict)
            or not isinstance(k.get("key_id"), str)
            or not isinstance(k.get("public_key_b64"), str)
        ):
            raise ConfigError(
                f"[[trust.keys]] entry {i}: key_id and public_key_b64 (strings) are required"
            )
        _refuse_unknown(k, {"key_id", "public_key_b64"}, f"[[trust.keys]] entry {i}:")
        try:
            pinned.append(PinnedKey.from_b64(k["key_id"], k["public_key_b64"]))
        except InvalidKey as exc:
            raise ConfigError(str(exc)) from None
    return TrustStore(pinned)


def _store_path(store: dict) -> str:
    path = store.get("path", default_db_path())
    if not isinstance(path, str) or not path:
        raise ConfigError("[store] path must be a non-empty string")
    return path


def _non_negative(value: object, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"{where} must be a finite, non-negative number")
    return float(value)


def _distinct_mirrors(mirrors: tuple[MirrorSpec, ...]) -> None:
    """Two [[mirrors]] with one name would be told apart nowhere (alerts, tables), and two with
    one base URL would share one status in the store, which keys mirror statuses by base URL."""
    by_name: dict[str, int] = {}
    by_origin: dict[tuple[str, str, str], int] = {}
    for i, m in enumerate(mirrors):
        if m.name in by_name:
            raise ConfigError(
                f"[[mirrors]] entries {by_name[m.name]} and {i} have the same name {m.name!r}"
            )
        by_name[m.name] = i
        url = urlsplit(m.base_url)
        origin = (url.scheme.lower(), url.netloc.lower(), url.path)
        if origin in by_origin:
            raise ConfigError(
                f"[[mirrors]] entries {by_origin[origin]} and {i} have the same"
                f" base_url {m.base_url!r}"
            )
        by_origin[origin] = i


def from_toml(text: str, source: str = "<string>") -> Config:
    """The Config a TOML text describes; every error names `source` (the file)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return _from_tables(data, source)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _from_tables(data: dict, source: str) -> Config:
    sections = {
        "trust",
        "mirrors",
        "peers",
        "crawl",
        "alerts",
        "metrics",
        "schedule",
        "observer",
        "store",
    }
    _refuse_unknown(data, sections, "")
    trust = _trust(_section(data, "trust")) if "trust" in data else TrustStore.registry_default()
    mirrors = DEFAULT_MIRRORS
    if "mirrors" in data:
        if not isinstance(data["mirrors"], list):
            raise ConfigError("mirrors must be an array of tables ([[mirrors]])")
        mirrors = tuple(_mirror(m, i) for i, m in enumerate(data["mirrors"]))
        _distinct_mirrors(mirrors)
    store = _section(data, "store")
    _refuse_unknown(store, {"path", "lock_timeout_s"}, "[store]")
    return Config(
        trust=trust,
        mirrors=mirrors,
        peers=_peers(data["peers"]) if "peers" in data else (),
        crawl=_dataclass_from(CrawlConfig, _section(data, "crawl"), "crawl"),
        alerts=_dataclass_from(AlertsConfig, _section(data, "alerts"), "alerts"),
        metrics=_dataclass_from(MetricsConfig, _section(data, "metrics"), "metrics"),
        schedule=_schedule(_section(data, "schedule")),
        observer=_dataclass_from(ObserverConfig, _section(data, "observer"), "observer"),
        db_path=_store_path(store),
        lock_timeout_s=_non_negative(store.get("lock_timeout_s", 30.0), "[store] lock_timeout_s"),
        source=source,
    )


def load(path: str | None = None, environ: dict | None = None) -> Config:
    """`--config PATH`, else $PITHSYNC_CONFIG, else the embedded defaults."""
    env = os.environ if environ is None else environ
    path = path or env.get("PITHSYNC_CONFIG")
    if not path:
        return Config(trust=TrustStore.registry_default(), db_path=default_db_path())
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    return from_toml(text, source=path)


def replace_db(cfg: Config, path: str) -> Config:
    from dataclasses import replace

    return replace(cfg, db_path=path)
