"""config/pithsync.toml documents every key: it must parse, and name each one at its default."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pithsync import config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "pithsync.toml"


def test_example_parses_to_the_embedded_defaults():
    cfg = config.load(str(EXAMPLE))
    defaults = config.load(None, environ={})
    assert cfg.crawl == defaults.crawl
    assert cfg.alerts == defaults.alerts
    assert cfg.metrics == defaults.metrics
    assert cfg.mirrors == defaults.mirrors
    assert [k.raw for k in cfg.trust] == [k.raw for k in defaults.trust]
    assert cfg.lock_timeout_s == defaults.lock_timeout_s


def test_example_mentions_every_key():
    text = EXAMPLE.read_text()
    for cls in (config.CrawlConfig, config.AlertsConfig, config.MetricsConfig):
        for f in dataclasses.fields(cls):
            assert re.search(rf"^#?\s*{f.name}\s*=", text, re.M), (
                f"{cls.__name__}.{f.name} is not documented in {EXAMPLE.name}"
            )
    for key in (
        "path",
        "lock_timeout_s",
        "key_id",
        "public_key_b64",
        "bundle_pattern",
        "state_pattern",
        "well_known_pattern",
        "observer_key",
        "window_s",
    ):
        assert re.search(rf"^#?\s*{key}\s*=", text, re.M), key
