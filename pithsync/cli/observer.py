"""`observer`: this store's observer identity, the public half of the key that signs its log."""

from __future__ import annotations

from pithsync.base.exits import ExitCode
from pithsync.config import Config
from pithsync.observer import fingerprint, key_path, load_or_create


def cmd_observer(args, cfg: Config, out) -> int:
    """Print the observer's verifier key (c2sp.org/signed-note `vkey`) and its fingerprint,
    making the key on first use.  --json: `{"name", "vkey", "fingerprint", "key_file"}`; the
    private key is never printed."""
    vkey = load_or_create(cfg.db_path, cfg.observer.name).verifier_key
    shown = {
        "name": vkey.name,
        "vkey": vkey.encode(),
        "fingerprint": fingerprint(vkey),
        "key_file": key_path(cfg.db_path),
    }
    if out.as_json:
        out.json(shown)
    else:
        out.line(f"observer:    {shown['name']}")
        out.line(f"vkey:        {shown['vkey']}")
        out.line(f"fingerprint: {shown['fingerprint']} (SHA-256 of the public key)")
        out.line(f"key file:    {shown['key_file']} (private: back it up, never share it)")
    return ExitCode.OK
