"""What the client core keeps about rooms and incoming messages, and the
small helpers its parts share; no protocol, no I/O."""

import json
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.python.failure import Failure


# Message ids remembered per room to drop replays; older ones have long
# left the server's retry window.
SEEN_IDS_PER_ROOM = 2000

# Server seqs of messages reported unreadable remembered per room, so that
# one fetched again (below a message still waiting for its key) is not
# reported twice.
UNREADABLE_PER_ROOM = 200

# Reports of lines the server sent malformed: this many each minute, then
# one line saying how many more there were; a server sending nothing but
# garbage cannot bury the user in notices.
FAULT_REPORTS_PER_MINUTE = 10


class ReportThrottle:
    """Says whether one more report may be shown now, and how many were held back."""

    def __init__(self, per_minute: int = FAULT_REPORTS_PER_MINUTE):
        self.per_minute = per_minute
        self._window = float("-inf")
        self._shown = 0
        self.held = 0

    def allow(self, now: float) -> bool:
        if now - self._window >= 60:
            self._window, self._shown = now, 0
        if self._shown < self.per_minute:
            self._shown += 1
            return True
        self.held += 1
        return False

    def take_held(self) -> int:
        held, self.held = self.held, 0
        return held


class SharedOperations:
    """At most one run of each keyed operation at a time; everyone who asks
    while it runs gets its result (a rotation, a key fetch)."""

    def __init__(self):
        self._waiters: dict[str, list[defer.Deferred]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._waiters

    def run(self, key: str, start) -> defer.Deferred:
        waiter = defer.Deferred()
        if key in self._waiters:
            self._waiters[key].append(waiter)
            return waiter
        self._waiters[key] = [waiter]
        defer.maybeDeferred(start).addBoth(self._done, key)
        return waiter

    def _done(self, result, key: str) -> None:
        for waiter in self._waiters.pop(key):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


@dataclass
class ClientEvent:
    """Something a UI shows: a message, a notice, a change of state."""

    kind: str
    fields: dict

    def to_json(self) -> str:
        return json.dumps({"event": self.kind, **self.fields}, ensure_ascii=False)


@dataclass
class Incoming:
    """A MESSAGE line, kept until it can be shown."""

    room: str
    server_seq: int
    sender: str
    epoch: int
    seq: int
    message_id: bytes
    token: bytes
    signature: bytes
    received_ms: int
    # Whether the user was told it waits for its key (once is enough).
    announced: bool = False
    # The length of the room's log this client had checked when it came live.
    log_seen: int = 0


@dataclass
class LocalRoom:
    """A room the user is in, as this client follows it. Who is in it, its
    policy and its keys come from its log (L{securechat.client.roomlog});
    role, flags, topic and member count here are the server's, for display."""

    name: str
    role: str = "member"
    epoch: int = 0
    history: str = "joined"
    flags: set = field(default_factory=set)
    topic: str = ""
    members: int = 0
    # How long the server says the room's log is: fetched up to there first.
    log_length: int = 0
    last_seq: int = 0
    senders: dict = field(default_factory=dict)
    seen: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    key_requested: bool = False
    key_wait_since: float | None = None
    announced_pending: int = 0
    # Messages we know the current epoch carried: the server demands a new
    # key after ROTATE_AFTER_MESSAGES, and rotating first wastes no sends.
    epoch_load: int = 0
    # Messages are handled one after another, so a sender whose key must be
    # fetched first does not let later messages overtake theirs.
    chain: defer.Deferred = field(default_factory=lambda: defer.succeed(None))
    # Server seqs of messages the server sent malformed, already reported.
    unreadable: list = field(default_factory=list)
    # Notices given once per room (and kept), by what they are about.
    told: set = field(default_factory=set)

    def to_dict(self) -> dict:
        return {"name": self.name, "last_seq": self.position(),
                "senders": self.senders, "seen": self.seen[-SEEN_IDS_PER_ROOM:],
                "unreadable": self.unreadable[-UNREADABLE_PER_ROOM:],
                "told": sorted(self.told)}

    @classmethod
    def from_dict(cls, data: dict) -> "LocalRoom":
        # Early states counted each sender's last seq as a plain number.
        senders = {nick: state if isinstance(state, dict) else
                   {"first": state, "last": state, "holes": []}
                   for nick, state in data["senders"].items()}
        return cls(data["name"], last_seq=data["last_seq"], senders=senders,
                   seen=data["seen"], unreadable=list(data.get("unreadable", ())),
                   told=set(data.get("told", ())))

    def position(self) -> int:
        """The seq to resume from: nothing at or below it still needs showing."""
        waiting = [m.server_seq for m in self.pending]
        return min(waiting) - 1 if waiting else self.last_seq
