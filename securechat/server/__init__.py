"""The daemon: protocol, TLS, and (as they land) rooms, accounts and storage."""
