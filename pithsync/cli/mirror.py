"""`serve` (the verified store as a conforming mirror) and `export` (the same tree as static
files for any web server)."""

from __future__ import annotations

import logging

from pithsync.base.exits import ExitCode, UsageError
from pithsync.config import Config
from pithsync.core.verify import Verifier
from pithsync.publishing import MANIFEST_PATH, Catalog, export_tree
from pithsync.store import Store


def parse_bind(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--bind wants HOST:PORT, got {text[:80]!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def cmd_serve(args, cfg: Config, out) -> int:
    """Serve the verified store read-only over HTTP until interrupted (UsageError when the
    address cannot be listened on)."""
    host, port = parse_bind(args.bind)
    store = Store.open_reader(cfg.db_path)  # fail now (exit 2 or 4), not inside the server
    try:
        catalog = Catalog(store, Verifier(cfg.trust))
        count = len(catalog.suffixes())
    finally:
        store.close()
    # Only `serve` needs the server side of aiohttp: kept off every other command's start.
    from aiohttp import web

    from pithsync.publishing.server import build_app

    app = build_app(
        cfg, base_url=args.base_url.rstrip("/") if args.base_url else None, name=args.name
    )
    shown = f"[{host}]" if ":" in host else host
    out.line(
        f"pithsync serve: {count} record(s) from {cfg.db_path} at http://{shown}:{port}/"
        f" (manifest {MANIFEST_PATH}); Ctrl-C stops"
    )
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            print=None,
            access_log=logging.getLogger("pithsync.access") if args.verbose else None,
            handle_signals=True,
        )
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return ExitCode.OK


def cmd_export(args, cfg: Config, out) -> int:
    """Write the verified store as a static mirror tree.  --json: the export report
    `{"directory", "records", "files_written", "files_unchanged", "not_published"}`."""
    base = args.base_url.rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise UsageError(f"--base-url must be an http(s) URL, got {args.base_url[:80]!r}")
    store = Store.open_reader(cfg.db_path)
    try:
        report = export_tree(store, cfg, args.directory, base, name=args.name)
    except OSError as exc:
        raise UsageError(
            f"cannot write {exc.filename or args.directory}: {exc.strerror or exc}"
        ) from None
    finally:
        store.close()
    if out.as_json:
        out.json(report)
    else:
        out.line(
            f"exported {len(report['records'])} record(s) to {report['directory']}:"
            f" {report['files_written']} file(s) written,"
            f" {report['files_unchanged']} unchanged; manifest {base}{MANIFEST_PATH}"
        )
        for pith, why in report["not_published"].items():
            out.line(f"  not published {pith}: {why}")
    return ExitCode.OK
