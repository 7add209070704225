"""Configuration: embedded defaults, replaced (not merged) by a TOML file."""

from __future__ import annotations

import re

import pytest

from pithsync import cli, config
from pithsync.config import DEFAULT_MIRRORS, ConfigError, from_toml, load
from pithsync.core.keys import REGISTRY_KEY_B64, REGISTRY_KEY_ID
from pithsync.testing import forge

TEST_KEY_TOML = f"""
[[trust.keys]]
key_id = "{forge.TEST_KEY_ID}"
public_key_b64 = "{forge.TEST_KEY.public_key_b64}"
"""


def test_empty_config_is_the_embedded_defaults():
    cfg = from_toml("")
    assert [k.key_id for k in cfg.trust] == [REGISTRY_KEY_ID]
    assert cfg.trust.get(REGISTRY_KEY_ID).public_key_b64 == REGISTRY_KEY_B64
    assert cfg.trust.get(REGISTRY_KEY_ID).fingerprint == "8d4b5ee74e4693bcd1df2446408b0d54"
    assert cfg.mirrors == DEFAULT_MIRRORS
    assert cfg.mirrors[0].base_url == "https://pith.science"


def test_load_without_path_or_env_is_defaults():
    cfg = load(None, environ={})
    assert [k.key_id for k in cfg.trust] == [REGISTRY_KEY_ID]
    assert cfg.source == "<embedded defaults>"


def test_trust_section_replaces_builtin_keys():
    cfg = from_toml(TEST_KEY_TOML)
    assert len(cfg.trust) == 1
    assert cfg.trust.get(REGISTRY_KEY_ID) is None
    assert cfg.trust.get(forge.TEST_KEY_ID).raw == forge.TEST_KEY.raw_public


def test_trust_section_with_several_keys():
    cfg = from_toml(
        TEST_KEY_TOML
        + f"""
[[trust.keys]]
key_id = "{REGISTRY_KEY_ID}"
public_key_b64 = "{REGISTRY_KEY_B64}"
"""
    )
    assert {k.key_id for k in cfg.trust} == {forge.TEST_KEY_ID, REGISTRY_KEY_ID}


def test_mirrors_replace_builtin_mirrors():
    cfg = from_toml(
        """
[[mirrors]]
name = "Mirror A"
base_url = "https://a.example/"

[[mirrors]]
base_url = "http://b.example:8080"
bundle_pattern = "{base}/b/{suffix}.json"
"""
    )
    assert [m.base_url for m in cfg.mirrors] == ["https://a.example", "http://b.example:8080"]
    assert [m.name for m in cfg.mirrors] == ["Mirror A", "http://b.example:8080"]
    assert all(m.base_url != "https://pith.science" for m in cfg.mirrors)
    assert cfg.mirrors[1].bundle_url("S" * 26) == "http://b.example:8080/b/" + "S" * 26 + ".json"
    assert (
        cfg.mirrors[0].state_url("S" * 26) == "https://a.example/pith/" + "S" * 26 + "/state.json"
    )
    assert [k.key_id for k in cfg.trust] == [REGISTRY_KEY_ID]  # trust untouched


def test_crawl_alerts_metrics_store():
    cfg = from_toml(
        """
[crawl]
concurrency = 4
timeout_s = 3
follow_hints = false
[alerts]
webhook_url = "https://hooks.example/x"
command = ["notify", "--now"]
[metrics]
textfile = "/tmp/pithsync.prom"
[store]
path = "/var/lib/pithsync/x.db"
lock_timeout_s = 5
"""
    )
    assert (
        cfg.crawl.concurrency == 4
        and cfg.crawl.timeout_s == 3.0
        and isinstance(cfg.crawl.timeout_s, float)
    )
    assert cfg.crawl.follow_hints is False
    assert (
        cfg.alerts.command == ("notify", "--now")
        and cfg.alerts.webhook_url == "https://hooks.example/x"
    )
    assert cfg.metrics.textfile == "/tmp/pithsync.prom"
    assert cfg.db_path == "/var/lib/pithsync/x.db" and cfg.lock_timeout_s == 5.0


@pytest.mark.parametrize(
    "text",
    [
        "[nonsense]\nx = 1\n",
        "top_level_key = 1\n",
        "[crawl]\nconcurency = 4\n",  # typo
        "[alerts]\nwebhook = 'https://x'\n",
        "[metrics]\nport = 9100\n",
        "[store]\ndatabase = 'x.db'\n",
        "[[mirrors]]\nbase_url = 'https://a.example'\nstatus = 'primary'\n",
    ],
    ids=["section", "top-level", "crawl", "alerts", "metrics", "store", "mirror"],
)
def test_unknown_keys_and_sections_are_errors(text):
    with pytest.raises(ConfigError, match="unknown"):
        from_toml(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[crawl]\nmax_byte = 1\n",
            "pithsync.toml: unknown key [crawl] max_byte; did you mean max_bytes?",
        ),
        ("[alerts]\nwebhook = 'x'\n", "unknown key [alerts] webhook; did you mean webhook_url?"),
        ("[store]\npaht = 'x.db'\n", "unknown key [store] paht; did you mean path?"),
        ("[crawll]\nretries = 1\n", "unknown section [crawll]; did you mean [crawl]?"),
        (
            "[[mirrors]]\nbase_url = 'https://a.example'\nbundle_patern = 'x'\n",
            "unknown key [[mirrors]] entry 0: bundle_patern; did you mean bundle_pattern?",
        ),
        (
            "[crawl]\nmax_byte = 1\nzzzzzz = 2\n",
            "unknown keys: [crawl] max_byte (did you mean max_bytes?), [crawl] zzzzzz",
        ),
    ],
    ids=["crawl", "alerts", "store", "section", "mirror", "two"],
)
def test_unknown_key_names_the_file_and_the_nearest_known_key(tmp_path, text, message):
    p = tmp_path / "pithsync.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load("pithsync.toml", environ={})  # relative: the tests run in tmp_path
    assert message in str(caught.value)
    assert str(caught.value).startswith("pithsync.toml: ")


def test_unknown_key_without_a_near_one_suggests_nothing():
    with pytest.raises(ConfigError) as caught:
        from_toml("[metrics]\nport = 9100\n", "m.toml")
    assert str(caught.value) == "m.toml: unknown key [metrics] port"


@pytest.mark.parametrize(
    ("mirrors", "message"),
    [
        (
            [("A", "https://a.example"), ("B", "https://b.example"), ("A", "https://c.example")],
            "dup.toml: [[mirrors]] entries 0 and 2 have the same name 'A'",
        ),
        (
            [("A", "https://a.example"), ("B", "https://A.example/")],
            "dup.toml: [[mirrors]] entries 0 and 1 have the same base_url 'https://A.example'",
        ),
        (
            [(None, "https://a.example"), (None, "https://a.example")],
            "dup.toml: [[mirrors]] entries 0 and 1 have the same name 'https://a.example'",
        ),
    ],
    ids=["name", "base-url", "unnamed"],
)
def test_duplicate_mirrors_are_config_errors(tmp_path, mirrors, message):
    text = "".join(
        "[[mirrors]]\n" + (f'name = "{name}"\n' if name else "") + f'base_url = "{base}"\n'
        for name, base in mirrors
    )
    with pytest.raises(ConfigError) as caught:
        from_toml(text, "dup.toml")
    assert str(caught.value) == message


def test_distinct_mirrors_on_one_host_are_fine():
    cfg = from_toml(
        '[[mirrors]]\nname = "a"\nbase_url = "https://h.example/a"\n'
        '[[mirrors]]\nname = "b"\nbase_url = "https://h.example/b"\n'
    )
    assert [m.base_url for m in cfg.mirrors] == ["https://h.example/a", "https://h.example/b"]


def test_cli_duplicate_mirror_exits_2_naming_file(tmp_path, seed_paths, capsys):
    p = tmp_path / "two.toml"
    p.write_text('[[mirrors]]\nname = "x"\nbase_url = "https://a.example"\n' * 2)
    assert cli.main(["verify", "--config", str(p), *seed_paths.values()]) == 2
    err = capsys.readouterr().err
    assert f"{p}: [[mirrors]] entries 0 and 1 have the same name 'x'" in err


@pytest.mark.parametrize(
    "text",
    [
        "[trust]\nextra = 1\n" + TEST_KEY_TOML,
        TEST_KEY_TOML + 'fingerprint_sha256_hex = "00000000000000000000000000000000"\n',
    ],
    ids=["trust-table", "trust-key-entry"],
)
def test_unknown_trust_keys_are_errors(text):
    with pytest.raises(ConfigError):
        from_toml(text)


@pytest.mark.parametrize(
    "b64",
    [
        "not base64!!",
        "stVStoiQhXFxp4s2pdzPNoqVNBMojDU/fJ2db5S3CbM",  # padding missing
        "c2hvcnQ=",  # valid base64, 5 bytes
        "stVStoiQhXFxp4s2pdzPNoqVNBMojDU/fJ2db5S3CbMA",  # 33 bytes
        "",
    ],
)
def test_bad_base64_key_is_config_error(b64):
    with pytest.raises(ConfigError):
        from_toml(f'[[trust.keys]]\nkey_id = "k"\npublic_key_b64 = "{b64}"\n')


@pytest.mark.parametrize(
    "text",
    [
        "[trust]\n",
        "[trust]\nkeys = []\n",
        '[[trust.keys]]\nkey_id = "k"\n',
        '[[trust.keys]]\npublic_key_b64 = "stVStoiQhXFxp4s2pdzPNoqVNBMojDU/fJ2db5S3CbM="\n',
        "trust = 5\n",
        "[crawl]\nconcurrency = 'many'\n",
        "[crawl]\nconcurrency = true\n",
        "[crawl]\nconcurrency = -1\n",
        "[crawl]\nfollow_hints = 1\n",
        "[alerts]\ncommand = 'notify'\n",
        "[alerts]\nwebhook_url = 5\n",
        "mirrors = 'https://a.example'\n",
        "[[mirrors]]\nname = 'no base'\n",
        "[[mirrors]]\nbase_url = 'ftp://a.example'\n",
        "[[mirrors]]\nbase_url = 'https://a.example'\nname = 3\n",
        "this is not toml",
        "[crawl]\nconcurrency = 1\nconcurrency = 2\n",
    ],
)
def test_invalid_config_is_config_error(text):
    with pytest.raises(ConfigError):
        from_toml(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[crawl]\ndeadline_s = nan\n", "deadline_s must be a finite number, not nan"),
        ("[crawl]\ntimeout_s = inf\n", "timeout_s must be a finite number, not inf"),
        ("[crawl]\nbackoff_max_s = -inf\n", "backoff_max_s must be a finite number"),
        ("[crawl]\ndeadline_s = 0\n", "deadline_s must be greater than 0"),
        ("[crawl]\ntimeout_s = 0.0\n", "timeout_s must be greater than 0"),
        ("[store]\nlock_timeout_s = nan\n", "lock_timeout_s must be a finite, non-negative number"),
    ],
)
def test_timeouts_must_be_finite_and_the_request_ones_positive(text, message):
    # nan made every request expire at the deadline watch's first check; 0 turned aiohttp's
    # read timeout off.
    with pytest.raises(ConfigError, match=message):
        from_toml(text)


def test_zero_is_still_allowed_where_it_means_something():
    cfg = from_toml(
        "[crawl]\nretries = 0\nmirror_down_after = 0\nbackoff_max_s = 0\n"
        "[store]\nlock_timeout_s = 0\n"
    )
    assert (
        cfg.crawl.retries,
        cfg.crawl.mirror_down_after,
        cfg.crawl.backoff_max_s,
        cfg.lock_timeout_s,
    ) == (0, 0, 0.0, 0.0)


def test_max_requests_per_s_is_a_positive_number_or_left_out():
    assert from_toml("").crawl.max_requests_per_s is None  # the default: no limit
    assert from_toml("[crawl]\nmax_requests_per_s = 5\n").crawl.max_requests_per_s == 5.0
    assert from_toml("[crawl]\nmax_requests_per_s = 0.5\n").crawl.max_requests_per_s == 0.5


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", '"fast"', "true", "[1]"])
def test_bad_max_requests_per_s_is_config_error(value):
    with pytest.raises(
        ConfigError, match=r"\[crawl\] max_requests_per_s must be a number greater than 0"
    ):
        from_toml(f"[crawl]\nmax_requests_per_s = {value}\n")


@pytest.mark.parametrize("value", ['"soon"', "[1]"])
def test_bad_store_lock_timeout_is_config_error(value):
    with pytest.raises(ConfigError):
        from_toml(f"[store]\nlock_timeout_s = {value}\n")


def test_load_from_path(tmp_path):
    p = tmp_path / "pithsync.toml"
    p.write_text(TEST_KEY_TOML)
    cfg = load(str(p), environ={})
    assert cfg.trust.get(forge.TEST_KEY_ID) is not None and cfg.source == str(p)


def test_pithsync_config_env_is_honoured(tmp_path, monkeypatch):
    p = tmp_path / "env.toml"
    p.write_text(TEST_KEY_TOML)
    assert [k.key_id for k in load(None, environ={"PITHSYNC_CONFIG": str(p)}).trust] == [
        forge.TEST_KEY_ID
    ]
    monkeypatch.setenv("PITHSYNC_CONFIG", str(p))
    assert [k.key_id for k in load().trust] == [forge.TEST_KEY_ID]


def test_explicit_path_beats_env(tmp_path):
    env_file, arg_file = tmp_path / "env.toml", tmp_path / "arg.toml"
    env_file.write_text("not toml at all")
    arg_file.write_text(TEST_KEY_TOML)
    cfg = load(str(arg_file), environ={"PITHSYNC_CONFIG": str(env_file)})
    assert cfg.trust.get(forge.TEST_KEY_ID) is not None


def test_missing_config_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load(str(tmp_path / "absent.toml"), environ={})


def test_non_utf8_config_is_config_error(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes('[crawl]\nuser_agent = "é"\n'.encode("latin-1"))
    with pytest.raises(ConfigError):
        load(str(p), environ={})


def test_state_directory_sets_default_db(monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/pithsync:/other")
    assert load(None, environ={}).db_path == "/var/lib/pithsync/pithsync.db"
    assert config.default_db_path() == "/var/lib/pithsync/pithsync.db"


# -- through the CLI --------------------------------------------------------------------------


def test_cli_bad_config_exits_2(tmp_path, seed_paths, capsys):
    p = tmp_path / "bad.toml"
    p.write_text("[nonsense]\n")
    assert cli.main(["verify", "--config", str(p), *seed_paths.values()]) == 2
    assert "unknown section [nonsense]" in capsys.readouterr().err


def test_cli_bad_key_exits_2(tmp_path, seed_paths, capsys):
    p = tmp_path / "bad.toml"
    p.write_text('[[trust.keys]]\nkey_id = "k"\npublic_key_b64 = "%%%"\n')
    assert cli.main(["verify", "--config", str(p), *seed_paths.values()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pithsync: ") and "base64" in err


def test_cli_missing_config_exits_2(tmp_path, seed_paths, capsys):
    assert cli.main(["verify", "--config", str(tmp_path / "none.toml"), *seed_paths.values()]) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_cli_bad_config_via_env_exits_2(tmp_path, seed_paths, monkeypatch, capsys):
    p = tmp_path / "bad.toml"
    p.write_text("[crawl]\nnope = 1\n")
    monkeypatch.setenv("PITHSYNC_CONFIG", str(p))
    assert cli.main(["verify", *seed_paths.values()]) == 2
    capsys.readouterr()


def test_cli_honours_env_config(tmp_path, seed_paths, monkeypatch, capsys):
    p = tmp_path / "test-key-only.toml"
    p.write_text(TEST_KEY_TOML)
    assert cli.main(["verify", *seed_paths.values()]) == 0
    capsys.readouterr()
    monkeypatch.setenv("PITHSYNC_CONFIG", str(p))
    assert cli.main(["verify", *seed_paths.values()]) == 1
    assert "key_not_pinned" in capsys.readouterr().out


def test_cli_crawl_max_bytes_applies_to_verify(tmp_path, seed_paths, capsys):
    p = tmp_path / "small.toml"
    p.write_text("[crawl]\nmax_bytes = 1000\n")
    assert (
        cli.main(["verify", "--config", str(p), "--json", seed_paths["000_919069ef98e1b946.txt"]])
        == 1
    )
    out = capsys.readouterr().out
    assert "not_strict_json" in out and "exceeds" in out


# -- [[peers]] --------------------------------------------------------------------------------

PEER_SIGNER_SEED = bytes(range(32))


def _peer_vkey() -> str:
    from pithsync.core.note import NoteSigner

    signer = NoteSigner("observer-b.example/pithsync/0a1b2c3d", PEER_SIGNER_SEED)
    return signer.verifier_key.encode()


def test_peers_parse_with_pinned_key_and_default_window():
    cfg = from_toml(
        f"""
[[peers]]
name = "B"
url = "http://127.0.0.1:8123/"
observer_key = "{_peer_vkey()}"

[[peers]]
name = "C"
url = "https://c.example"
observer_key = "{_peer_vkey()}"
window_s = 600
"""
    )
    b, c = cfg.peers
    assert (b.name, b.url, b.window_s) == ("B", "http://127.0.0.1:8123", 86400.0)
    assert b.observer_key.encode() == _peer_vkey()
    assert b.observer_key.name == "observer-b.example/pithsync/0a1b2c3d"
    assert (c.url, c.window_s) == ("https://c.example", 600.0)
    assert from_toml("").peers == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('url = "http://127.0.0.1:1"\nobserver_key = "{key}"', "name (a non-empty string)"),
        ('name = "B"\nurl = "ftp://x"\nobserver_key = "{key}"', "url must be http(s)"),
        ('name = "B"\nurl = "https://b.example"\nobserver_key = "b+00000000+AQ=="', "observer_key"),
        ('name = "B"\nurl = "https://b.example"\nobserver_key = "{bad_id}"', "key ID"),
        ('name = "B"\nurl = "https://b.e"\nobserver_key = "{key}"\nwindow_s = -1', "window_s"),
        ('name = "B"\nurl = "https://b.example"\nobserver_key = "{key}"\nwindow = 1', "window_s?"),
    ],
)
def test_bad_peer_entries_are_config_errors(entry, message):
    key = _peer_vkey()
    name, _, rest = key.split("+", 2)
    bad_id = f"{name}+00000000+{rest}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_toml("[[peers]]\n" + entry.format(key=key, bad_id=bad_id), source="p.toml")


def test_peers_table_instead_of_array_and_duplicates_are_config_errors():
    with pytest.raises(ConfigError, match=r"\(\[\[peers\]\]\), window_s in each"):
        from_toml("[peers]\nwindow_s = 10\n")
    entry = f'[[peers]]\nname = "B"\nurl = "https://b.example"\nobserver_key = "{_peer_vkey()}"\n'
    with pytest.raises(ConfigError, match="entries 0 and 1 have the same name"):
        from_toml(entry + entry)
