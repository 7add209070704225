"""pithsync's benchmark harness (issue 5).  Run it with `bash bench/run`; see bench/README.md."""
