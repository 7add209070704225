"""The pure protocol core.

Nothing in this package performs I/O, reads the clock, or imports aiohttp, sqlite or the CLI:
it turns bytes and already-parsed documents into typed verdicts.  The shells around it
(fetch, store, alerts, cli, serve) do the rest.
"""
