"""The urwid console client: the only package that imports urwid. It reaches
the network only through securechat.client's events and commands."""
