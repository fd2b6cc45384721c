# -*- test-case-name: tests.test_server_limits -*-
"""Per-connection, per-address and per-user limits: what one peer may cost
the daemon.

The numbers come from the configuration (defaults in securechat.constants);
this module holds them together, counts connections and registrations per
address, and keeps each user's storage budget. Pure state: time is passed in.
"""

from dataclasses import dataclass

from securechat.constants import (
    IDLE_PING_SECONDS,
    LOGIN_TIMEOUT_SECONDS,
    MAX_CONNECTIONS_PER_IP,
    MAX_PAUSED_SECONDS,
    MAX_SEND_QUEUE_BYTES,
    PING_TIMEOUT_SECONDS,
    RATE_BURST_LINES,
    RATE_LINES_PER_SECOND,
    RATE_STRIKES_BEFORE_DISCONNECT,
    REGISTRATIONS_PER_HOUR,
    STORE_BURST_BYTES,
    STORE_BYTES_PER_DAY,
    STORE_BYTES_PER_SECOND,
)
from securechat.ratelimit import TokenBucket
from securechat.wire import Code, WireError

SECONDS_PER_DAY = 86400


@dataclass(frozen=True)
class ConnectionLimits:
    rate_per_second: float = RATE_LINES_PER_SECOND
    rate_burst: int = RATE_BURST_LINES
    strikes: int = RATE_STRIKES_BEFORE_DISCONNECT
    per_ip: int = MAX_CONNECTIONS_PER_IP
    login_timeout: float = LOGIN_TIMEOUT_SECONDS
    idle_ping: float = IDLE_PING_SECONDS
    ping_timeout: float = PING_TIMEOUT_SECONDS
    max_send_queue: int = MAX_SEND_QUEUE_BYTES
    max_paused: float = MAX_PAUSED_SECONDS
    registrations_per_hour: int = REGISTRATIONS_PER_HOUR


class AddressCounter:
    """Open connections per peer address, for the per-IP cap."""

    def __init__(self, limit: int):
        self.limit = limit
        self._counts: dict[str, int] = {}

    def admit(self, host: str) -> bool:
        """Count a new connection from C{host} if it is within the limit."""
        if self._counts.get(host, 0) >= self.limit:
            return False
        self._counts[host] = self._counts.get(host, 0) + 1
        return True

    def release(self, host: str) -> None:
        remaining = self._counts.get(host, 0) - 1
        if remaining > 0:
            self._counts[host] = remaining
        else:
            self._counts.pop(host, None)

    def __len__(self) -> int:
        return sum(self._counts.values())


class AddressRate:
    """How often each address may do something (register an account): a
    bucket per address, forgotten once it has refilled, so that the table
    holds only addresses that acted within the last C{period} seconds. None
    per period means no limit."""

    def __init__(self, per_period: int, period: float):
        self.per_period = per_period
        self.period = period
        self._buckets: dict[str, TokenBucket] = {}

    def wait(self, address: str, now: float) -> float:
        """Seconds until C{address} may act again; 0 if it may now."""
        bucket = self._buckets.get(address)
        return 0.0 if bucket is None else bucket.delay(now)

    def spend(self, address: str, now: float) -> None:
        """C{address} acted."""
        if not self.per_period:
            return
        self._forget_full(now)
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self.per_period / self.period,
                                                          self.per_period, now)
        bucket.take(now)

    def _forget_full(self, now: float) -> None:
        if len(self._buckets) > 1024:
            self._buckets = {a: b for a, b in self._buckets.items()
                             if b.delay(now, self.per_period) > 0}


@dataclass(frozen=True)
class StorageLimits:
    """Bytes of messages one user may have stored: a sustained rate with a
    burst, and a total per UTC day. 0 turns a limit off."""

    bytes_per_second: int = STORE_BYTES_PER_SECOND
    burst_bytes: int = STORE_BURST_BYTES
    bytes_per_day: int = STORE_BYTES_PER_DAY


def _describe(size: int) -> str:
    return f"{size / 1024 / 1024:g} MiB" if size >= 1024 * 1024 else f"{size:,} bytes"


class StorageBudget:
    """Each user's storage budget, charged for every message before it is
    stored and given back if it is not.

    Day totals are kept per UTC day (the day number is C{now // 86400}); what
    this daemon stored and has not yet written down is counted apart, so that
    the totals it reads back from the database (which include other daemons')
    never count it twice.
    """

    def __init__(self, limits: StorageLimits):
        self.limits = limits
        self._rates: dict[int, TokenBucket] = {}
        self._day = -1
        self._stored: dict[int, int] = {}
        self._unsaved: dict[int, int] = {}

    def _today(self, now: float) -> int:
        day = int(now // SECONDS_PER_DAY)
        if day != self._day:
            self._day, self._stored, self._unsaved = day, {}, {}
        return day

    def charge(self, user_id: int, size: int, now: float) -> None:
        """Count C{size} bytes against C{user_id}'s budget.

        @raise WireError: RATE_LIMITED with the wait, if the budget is spent.
        """
        day = self._today(now)
        per_day = self.limits.bytes_per_day
        used = self._stored.get(user_id, 0) + self._unsaved.get(user_id, 0)
        if per_day and used + size > per_day:
            raise WireError(Code.RATE_LIMITED,
                            f"you have stored {_describe(used)} of messages today, the most "
                            f"this server keeps per user per day is {_describe(per_day)}",
                            retry_after=(day + 1) * SECONDS_PER_DAY - now)
        if self.limits.bytes_per_second:
            bucket = self._rates.get(user_id)
            if bucket is None:
                bucket = self._rates[user_id] = TokenBucket(
                    self.limits.bytes_per_second, self.limits.burst_bytes, now)
            if not bucket.take(now, size):
                raise WireError(Code.RATE_LIMITED,
                                f"over {_describe(self.limits.bytes_per_second)} of messages "
                                f"per second; slow down", retry_after=bucket.delay(now, size))
        self._unsaved[user_id] = self._unsaved.get(user_id, 0) + size

    def refund(self, user_id: int, size: int, now: float) -> None:
        """A charged message was not stored (a retry of a stored one, a refusal)."""
        if int(now // SECONDS_PER_DAY) == self._day and self._unsaved.get(user_id, 0) >= size:
            self._unsaved[user_id] -= size
        bucket = self._rates.get(user_id)
        if bucket is not None:
            bucket.give_back(size)

    def take_unsaved(self, now: float) -> tuple[int, dict[int, int]]:
        """The day and what was stored here since last asked, to write down."""
        day = self._today(now)
        unsaved = {user: size for user, size in self._unsaved.items() if size}
        self._unsaved = {}
        for user, size in unsaved.items():
            self._stored[user] = self._stored.get(user, 0) + size
        return day, unsaved

    def restore(self, unsaved: dict[int, int]) -> None:
        """Writing L{take_unsaved}'s counts failed: keep them for the next try."""
        for user, size in unsaved.items():
            self._stored[user] = self._stored.get(user, 0) - size
            self._unsaved[user] = self._unsaved.get(user, 0) + size

    def stored_today(self, day: int, totals: dict[int, int]) -> None:
        """The day's totals as the database holds them (every daemon's)."""
        if day == self._day:
            self._stored = dict(totals)

    def used(self, user_id: int, now: float) -> int:
        self._today(now)
        return self._stored.get(user_id, 0) + self._unsaved.get(user_id, 0)

    def forget_idle(self, now: float) -> None:
        """Drop the rate buckets that have refilled: they hold nothing."""
        self._rates = {u: b for u, b in self._rates.items()
                       if b.delay(now, self.limits.burst_bytes) > 0}
