"""The headless client core: session, keys, outbox and reconnection.

No urwid here: the console UI and the benchmarks' load generator both use
this package through its events and commands.
"""
