"""The `whitevec` command line: local commands on a data dir, and remote ones through the HTTP API."""
