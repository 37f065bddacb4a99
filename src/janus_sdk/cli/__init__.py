"""The `janus` command line."""
