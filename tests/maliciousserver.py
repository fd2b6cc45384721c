"""A malicious server for the tests: real client sessions and the real
service (tests.clientharness), with a man in the middle of each client's
connection that rewrites, drops, replays, reorders and injects lines, and
a hand in the service's own state (members it lists, keys it serves).

Rules see whole lines. A rule for what a client sends may answer it
itself instead of passing it on (what a server that swallows a kick does);
a rule for what the server sends may drop a line, change it, or add more.
"""

from securechat.roomlog import SignedEntry
from securechat.wire import SERVER_VERBS, b64decode, b64encode, encode_frame, parse_line
from tests.clientharness import Network, Rig


def frame_of(line: bytes):
    """The parsed frame of a line, or None for one that does not parse."""
    try:
        return parse_line(line)
    except Exception:
        return None


def entry_of(frame):
    """The log entry an ENTRY frame carries (its SignedEntry)."""
    fields = SERVER_VERBS["ENTRY"].bind(frame)
    return SignedEntry.decode(fields["entry"], fields["signature"])


def line(verb: str, *args: str, request_id: str = "*") -> bytes:
    return encode_frame(verb, request_id, *args)


class Interceptor:
    """The rules on one client's connection. Each rule takes a line and returns
    None (leave it), or the list of lines to pass on instead (empty: drop)."""

    def __init__(self, rig: Rig):
        self.rig = rig
        self.to_client: list = []
        self.to_server: list = []
        self._buffer = b""
        self._deliver = None
        self._send = None
        # Every line the server sent this client, as the server sent it.
        self.seen: list[bytes] = []

    def wire(self, client_protocol) -> None:
        self._deliver = client_protocol.dataReceived
        self._send = client_protocol.send_line
        client_protocol.dataReceived = self._from_server
        client_protocol.send_line = self._from_client

    def _apply(self, rules, data: bytes) -> list[bytes]:
        lines = [data]
        for rule in rules:
            out = []
            for each in lines:
                changed = rule(each)
                out.extend([each] if changed is None else changed)
            lines = out
        return lines

    def _from_server(self, data: bytes) -> None:
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\n")
        for raw in complete:
            self.seen.append(raw)
            for out in self._apply(self.to_client, raw):
                self._deliver(out + b"\n")

    def _from_client(self, data: bytes) -> None:
        self.rig.sent.append(data)
        for out in self._apply(self.to_server, data):
            self._send(out)

    def push(self, raw: bytes) -> None:
        """A line to the client as if the server sent it."""
        self._deliver(raw + b"\n")


class MaliciousNetwork(Network):
    """The clients' network with an interceptor on every connection."""

    def __init__(self, **server_options):
        super().__init__(**server_options)
        self.interceptors: dict[str, Interceptor] = {}

    def connect(self, rig: Rig) -> None:
        interceptor = self.interceptors.get(rig.name)
        if interceptor is None:
            interceptor = self.interceptors[rig.name] = Interceptor(rig)
        interceptor.rig = rig
        super().connect(rig, wire=interceptor.wire)

    def of(self, name: str) -> Interceptor:
        return self.interceptors[name]

    # -- the server's own state ---------------------------------------------------

    @property
    def service(self):
        return self.server.service

    def list_as_member(self, room: str, nick: str, role: str = "member") -> None:
        """From now on the server counts C{nick} a member of C{room} (WHO lists
        them, their messages are relayed, key requests are passed on): no entry
        of the log says so."""
        logs = self.service.logs
        if not hasattr(logs, "ghosts"):
            honest = logs.mirror
            logs.ghosts = {}

            def mirror(found, state):
                members, bans = honest(found, state)
                return {**members, **logs.ghosts.get(found.id, {})}, bans

            logs.mirror = mirror
        found = self.service.rooms.find(room)
        logs.ghosts.setdefault(found.id, {})[self.service.accounts.find(nick).id] = role
        self.service.rooms.set_members(found, {**found.members, **logs.ghosts[found.id]})


# -- rules ---------------------------------------------------------------------------


def swallow(verb: str, answer_with=("OK",), when=lambda frame: True, log=None):
    """A rule for what a client sends: a C{verb} request is not passed on; the
    server answers it itself (OK by default)."""

    def rule(raw: bytes):
        frame = frame_of(raw)
        if frame is None or frame.verb != verb or not when(frame):
            return None
        if log is not None:
            log.append(frame)
        rule.interceptor.push(line(answer_with[0], *answer_with[1:],
                                   request_id=frame.request_id))
        return []

    return rule


def drop(verb: str, when=lambda frame: True, log=None):
    """A rule for what the server sends: C{verb} lines C{when} says are dropped."""

    def rule(raw: bytes):
        frame = frame_of(raw)
        if frame is None or frame.verb != verb or not when(frame):
            return None
        if log is not None:
            log.append(frame)
        return []

    return rule


def entries_of_kind(kind: str, author: bytes | None = None):
    """A C{when} for ENTRY lines: those of C{kind} (by C{author}, if given)."""

    def when(frame) -> bool:
        entry = entry_of(frame).entry
        return entry.kind == kind and (author is None or entry.author == author)

    return when


def rewrite(verb: str, change):
    """A rule for what the server sends: C{verb} lines made into C{change(frame)}
    (a line, or None to leave it)."""

    def rule(raw: bytes):
        frame = frame_of(raw)
        if frame is None or frame.verb != verb:
            return None
        new = change(frame)
        return None if new is None else [new]

    return rule


def on(interceptor: Interceptor, rule, to_server: bool = False):
    """Put C{rule} on C{interceptor}'s connection (what the client sends, or gets)."""
    rule.interceptor = interceptor
    (interceptor.to_server if to_server else interceptor.to_client).append(rule)
    return rule


__all__ = ["MaliciousNetwork", "Interceptor", "swallow", "drop", "rewrite", "on", "line",
           "frame_of", "entry_of", "entries_of_kind", "b64encode", "b64decode"]
