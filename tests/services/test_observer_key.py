"""The observer key (issue #17): made once beside the store, 0600, refused when others can read
it, never printed; `pithsync observer` shows its public half."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import pytest

from pithsync import cli
from pithsync.core.note import NoteSigner, VerifierKey
from pithsync.observer import ObserverKeyError, fingerprint, key_path, load_or_create


def test_made_once_with_mode_0600_and_loaded_again(tmp_path):
    db = str(tmp_path / "pithsync.db")
    signer = load_or_create(db)
    path = tmp_path / "pithsync.db.observer-key"
    assert key_path(db) == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == signer.encode() + "\n"
    again = load_or_create(db, name="ignored-for-an-existing-key")
    assert again.encode() == signer.encode()
    host, app, digest = signer.name.split("/")
    public = signer.verifier_key.public_key
    assert (app, digest) == ("pithsync", hashlib.sha256(public).hexdigest()[:8])
    assert host


def test_configured_name_on_creation(tmp_path):
    signer = load_or_create(str(tmp_path / "s.db"), name="observer.example/one")
    assert signer.name == "observer.example/one"
    with pytest.raises(ObserverKeyError, match="space or a"):
        load_or_create(str(tmp_path / "t.db"), name="two words")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_key_others_can_read_is_refused(tmp_path, mode):
    db = str(tmp_path / "pithsync.db")
    signer = load_or_create(db)
    os.chmod(key_path(db), mode)
    with pytest.raises(ObserverKeyError) as err:
        load_or_create(db)
    assert key_path(db) in str(err.value) and "readable by others" in str(err.value)
    assert signer.encode() not in str(err.value)


@pytest.mark.parametrize(
    "content", [b"", b"PRIVATE+KEY+x+00000000+AAAA\n", b"\xff\xfe\n", b"A" * 10_000]
)
def test_a_malformed_key_file_is_a_clear_error(tmp_path, content):
    db = str(tmp_path / "pithsync.db")
    fd = os.open(key_path(db), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(ObserverKeyError, match="is not a PRIVATE"):
        load_or_create(db)
    assert open(key_path(db), "rb").read() == content  # never overwritten


def test_no_directory_names_it(tmp_path):
    with pytest.raises(ObserverKeyError, match="no directory"):
        load_or_create(str(tmp_path / "missing" / "pithsync.db"))


def test_fingerprint_is_sha256_of_the_public_key():
    signer = NoteSigner("obs", bytes(range(32)))
    digest = hashlib.sha256(signer.verifier_key.public_key).digest()
    expected = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    assert fingerprint(signer.verifier_key) == expected


def test_cli_prints_the_vkey_never_the_secret(tmp_path, capsys):
    db = str(tmp_path / "pithsync.db")
    assert cli.main(["--db", db, "observer", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    signer = load_or_create(db)
    assert VerifierKey.parse(shown["vkey"]) == signer.verifier_key
    assert shown["name"] == signer.name
    assert shown["fingerprint"] == fingerprint(signer.verifier_key)
    assert cli.main(["--db", db, "observer"]) == 0
    text = capsys.readouterr().out
    assert shown["vkey"] in text and shown["fingerprint"] in text
    # PRIVATE+KEY+<name>+<id>+<base64 key>: the base64 may itself hold a "+", and end with one.
    secret = signer.encode().split("+", 4)[4]
    assert secret not in text and secret not in json.dumps(shown)


def test_cli_refuses_an_open_key_with_exit_4(tmp_path, capsys):
    db = str(tmp_path / "pithsync.db")
    load_or_create(db)
    os.chmod(key_path(db), 0o644)
    assert cli.main(["--db", db, "observer"]) == 4
    err = capsys.readouterr().err
    assert "readable by others" in err and "Traceback" not in err


def test_configured_name_through_the_cli(tmp_path, capsys):
    db = str(tmp_path / "pithsync.db")
    config = tmp_path / "pithsync.toml"
    config.write_text('[observer]\nname = "watch.example/pithsync"\n')
    assert cli.main(["--config", str(config), "--db", db, "observer", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "watch.example/pithsync"
