# -*- test-case-name: tests.test_server_limits -*-
"""Per-connection and per-address limits: what one peer may cost the daemon.

The numbers come from the configuration (defaults in securechat.constants);
this module holds them together and counts connections per address.
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
)


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
