# -*- test-case-name: tests.test_tap -*-
"""Where the daemon keeps its state and how it reaches other daemons, as the
settings say: SQLite and in-process fan-out for one daemon, PostgreSQL and
Redis for several. Each remote service is checked before the daemon starts
serving, so that a wrong URL or a service that is down is one line at once.
"""

import os
from functools import partial

from securechat.server.cluster import ClusterFanOut
from securechat.server.sqlite_store import SQLiteStore, open_connections

DATABASE_FILE = "securechat.db"


class Unavailable(Exception):
    """A service the settings name cannot be used; one line for the operator."""


def open_store(settings, data_dir: str):
    """SQLite in the data dir by default; PostgreSQL, checked now, when several daemons share it."""
    if not settings.postgres:
        return SQLiteStore(*open_connections(
            settings.database or os.path.join(data_dir, DATABASE_FILE)))
    try:
        from securechat.server.postgres_store import PostgresStore, StoreUnavailable
    except ImportError:
        raise Unavailable("storage.database is a PostgreSQL URL but psycopg2 is missing: "
                          "pip install 'securechat[postgres]'") from None
    try:
        return PostgresStore.connect(settings.database)
    except StoreUnavailable as error:
        raise Unavailable(str(error)) from None


def open_fanout(settings, reactor):
    """In-process by default; across daemons over Redis, checked now, when configured."""
    if not settings.redis:
        return None
    # txredisapi takes the global reactor when imported: only now has twistd chosen it.
    from securechat.server.redisbus import BusUnavailable, RedisBus, check_reachable

    try:
        check_reachable(settings.redis)
    except BusUnavailable as error:
        raise Unavailable(str(error)) from None
    channel = f"securechat:{settings.public_name}"
    return ClusterFanOut(partial(RedisBus, settings.redis, channel, reactor=reactor), reactor)
