"""Where a mirror keeps a record (PROTOCOL.md, "URLs and mirrors")."""

from __future__ import annotations

from dataclasses import dataclass


def base_key(url: str) -> str:
    """The key a mirror's base URL is known by, however it was written."""
    return url.rstrip("/").lower()


BUNDLE_PATTERN = "{base}/pith/{suffix}/bundle.json"
STATE_PATTERN = "{base}/pith/{suffix}/state.json"
WELL_KNOWN_PATTERN = "{base}/.well-known/pith/{suffix}/bundle.json"


@dataclass(frozen=True)
class MirrorSpec:
    """A mirror as configured (trusted to be contacted) or as hinted (untrusted)."""

    name: str
    base_url: str
    bundle_pattern: str = BUNDLE_PATTERN
    state_pattern: str = STATE_PATTERN
    well_known_pattern: str = WELL_KNOWN_PATTERN
    configured: bool = True

    def _fill(self, pattern: str, suffix: str) -> str:
        return pattern.replace("{base}", self.base_url.rstrip("/")).replace("{suffix}", suffix)

    def bundle_url(self, suffix: str) -> str:
        return self._fill(self.bundle_pattern, suffix)

    def state_url(self, suffix: str) -> str:
        return self._fill(self.state_pattern, suffix)

    def well_known_url(self, suffix: str) -> str:
        return self._fill(self.well_known_pattern, suffix)


def hinted_mirrors(bundle: dict, suffix: str) -> list[MirrorSpec]:
    """Mirrors a (verified) bundle points at through `mirror_hints` and `links`.  Untrusted: the
    caller applies its safety policy before fetching anything."""
    found: list[MirrorSpec] = []
    hints = bundle.get("mirror_hints")
    for hint in hints if isinstance(hints, list) else []:
        if not isinstance(hint, dict):
            continue
        base = hint.get("base_url")
        if isinstance(base, str) and base:
            name = hint.get("name") if isinstance(hint.get("name"), str) else base
            found.append(MirrorSpec(name=name[:200], base_url=base[:2000], configured=False))
    links = bundle.get("links")
    if isinstance(links, dict):
        bundle_link = links.get("bundle")
        tail = f"/pith/{suffix}/bundle.json"
        if isinstance(bundle_link, str) and bundle_link.endswith(tail):
            base = bundle_link[: -len(tail)]
            found.append(MirrorSpec(name=base[:200], base_url=base[:2000], configured=False))
    return found
