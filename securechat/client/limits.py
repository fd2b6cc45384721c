# -*- test-case-name: tests.test_client_limits -*-
"""What the server accepts, as it announced at login, and keeping to it.

The client paces its lines to the server's flood limit and its messages to
the server's storage budget, and refuses a message that is too long before
anything leaves: a limit on one end is one the other end keeps to. The last
announcement is saved, so that a message typed while offline is judged by
the same limits.
"""

from securechat.crypto.envelope import MAX_MESSAGE_BYTES, token_size
from securechat.ratelimit import TokenBucket
from securechat.wire.grammar import MAX_TOKEN_BYTES
from securechat.wire.limits import AnnouncedLimits

# Head-room kept below the server's announced flood limits and byte budget.
PACING_MARGIN = 0.9

# The least pace a client keeps to, whatever a server announces: a server
# announcing zero would otherwise stop every line for ever.
MINIMUM_LINES_PER_SECOND = 1.0

# Bytes a stored message costs besides its token: its signature and row.
_STORED_EXTRA_BYTES = 512


def stored_size(text: str) -> int:
    """What a message of C{text} counts against the storage budget, at most."""
    return token_size(len(text.encode("utf-8"))) + _STORED_EXTRA_BYTES


def describe_size(size: int) -> str:
    """A byte count as people read it: 71,204 bytes."""
    return f"{size:,} bytes"


class ServerLimits:
    """The announced limits, and token buckets that keep a connection within them.

    @ivar announced: the last L{AnnouncedLimits}, or None before the first.
    """

    def __init__(self, saved: str | None = None):
        self.announced = AnnouncedLimits.parse(saved) if saved else None
        self._lines: TokenBucket | None = None
        self._bytes: TokenBucket | None = None

    def to_saved(self) -> str | None:
        return self.announced.encode() if self.announced else None

    @property
    def max_message_bytes(self) -> int:
        """The longest message this client seals and this server stores."""
        announced = self.announced.max_message_bytes if self.announced else MAX_MESSAGE_BYTES
        return min(announced, MAX_MESSAGE_BYTES)

    def check_message(self, text: str) -> str | None:
        """Why C{text} cannot be sent at all, or None."""
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            return "the message holds characters that are not text (lone surrogates)"
        if size > self.max_message_bytes:
            return (f"message too long: {describe_size(size)}, at most "
                    f"{self.max_message_bytes:,}; split it or shorten it")
        return None

    def start(self, announced: AnnouncedLimits, now: float) -> None:
        """A connection has logged in under C{announced}: pace it from now on."""
        self.announced = announced
        rate = max(MINIMUM_LINES_PER_SECOND, announced.lines_per_second * PACING_MARGIN)
        self._lines = TokenBucket(rate, max(1.0, announced.line_burst * PACING_MARGIN - 4), now)
        self._bytes = None
        if announced.store_bytes_per_second and announced.store_burst_bytes:
            self._bytes = TokenBucket(announced.store_bytes_per_second * PACING_MARGIN,
                                      max(MAX_TOKEN_BYTES, announced.store_burst_bytes
                                          * PACING_MARGIN), now)

    def stop(self) -> None:
        """Offline: nothing to pace until the next login."""
        self._lines = self._bytes = None

    @property
    def pacing(self) -> bool:
        return self._lines is not None

    def take_line(self, now: float) -> bool:
        return self._lines is None or self._lines.take(now)

    def line_delay(self, now: float) -> float:
        return 0.0 if self._lines is None else self._lines.delay(now)

    def take_message(self, text: str, now: float) -> bool:
        """Spend the storage budget a message costs, if it is there."""
        return self._bytes is None or self._bytes.take(now, stored_size(text))

    def message_delay(self, text: str, now: float) -> float:
        return 0.0 if self._bytes is None else self._bytes.delay(now, stored_size(text))

    def give_back_message(self, text: str) -> None:
        """A message that was paid for but not stored (refused, to be sent again)."""
        if self._bytes is not None:
            self._bytes.give_back(stored_size(text))
