"""Pure cryptography for securechat: no sockets, no files, no clocks read."""
