"""A load-generator worker: many chat clients in one process, on the
project's wire codec, trust and login code, with no UI and no live crypto.

The orchestrator (benchmarks.run) starts several workers (see
benchmarks.processes), sends each a plan, waits until all say they are
ready, says "go", and reads one JSON line of figures from each at the end.
Everything expensive is done before "go": identities are loaded, epoch
records for the room key rotations the daemon demands every 100 messages are
signed in advance, and message tokens are random bytes (the server never
decrypts; receivers only read the send time carried in the token's first 8
bytes).

The daemon's clients pace every line to the flood limits announced at login,
as the real client does: the daemon disconnects a client that floods it.
"""

import base64
import collections
import json
import math
import os
import struct
import time

from OpenSSL import SSL
from twisted.internet import defer, reactor, stdio, task
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from benchmarks import identities
from securechat.client.limits import PACING_MARGIN
from securechat.client.trust import ServerTrust
from securechat.constants import ROTATE_AFTER_MESSAGES
from securechat.crypto.certificates import parse_fingerprint
from securechat.crypto.identity import login_signature
from securechat.lineprotocol import tls_exporter
from securechat.ratelimit import TokenBucket
from securechat.roomlog import RoomState, SignedEntry, author
from securechat.wire import SERVER_VERBS, b64encode, encode_frame, parse_line

SIGNATURE_BYTES = 384
CONNECT_TIMEOUT = 60
# Times a join is built again after another process's entry took its place.
JOIN_ATTEMPTS = 20

Reply = collections.namedtuple("Reply", "frame lines")


class Histogram:
    """Latencies in log buckets 2% wide: mergeable across workers, cheap to fill."""

    BASE = math.log(1.02)

    def __init__(self, counts=None):
        self.counts: dict[int, int] = {int(k): v for k, v in (counts or {}).items()}

    def add(self, seconds: float) -> None:
        index = int(math.log(max(seconds, 1e-6) * 1e6) / self.BASE)
        self.counts[index] = self.counts.get(index, 0) + 1

    def merge(self, other: "Histogram") -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, fraction: float) -> float | None:
        """Seconds below which C{fraction} of the samples fall (bucket upper edge)."""
        total = self.total
        if not total:
            return None
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= fraction * total:
                return math.exp((index + 1) * self.BASE) / 1e6
        return None


def sent_at(token_b64: bytes) -> float:
    """The send time from the first 8 bytes of a token (12 base64 characters)."""
    return struct.unpack(">d", base64.urlsafe_b64decode(token_b64[:12])[:8])[0]


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Line(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def connectionMade(self):  # noqa: N802
        self.factory.client.connected(self)

    def lineReceived(self, line):  # noqa: N802
        self.factory.client.received(line)

    def connectionLost(self, reason):  # noqa: N802
        self.factory.client.lost(reason)


class SharedTrust(ServerTrust):
    """The client's trust (the pinned fingerprint is checked on every connection)
    with one TLS context for all: a context per connection, as a real client
    has, would cost the load generator more than it measures."""

    _context = None

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:  # noqa: N802
        if self._context is None:
            self._context = super().clientConnectionForTLS(tlsProtocol).get_context()
        return SSL.Connection(self._context, None)


class Peers:
    """What every worker's clients share: the server, the trust in it, the counts."""

    def __init__(self, plan: dict):
        self.plan = plan
        self.running = False  # sending, in the fanout scenarios
        self.watching = False  # from "go" on, a lost connection is a failure
        self.delivered = 0
        self.errors: dict[str, int] = {}
        self.latency = Histogram()
        self.trust = SharedTrust(plan["host"], fingerprint=parse_fingerprint(plan["fingerprint"]))

    def count(self, error: str) -> None:
        self.errors[error] = self.errors.get(error, 0) + 1


class Client:
    """One connection. Subclasses speak the daemon's protocol or the relay's."""

    def __init__(self, worker: Peers, nick: str, identity, room: "Room", bind: str):
        self.worker = worker
        self.nick = nick
        self.identity = identity
        self.room = room
        self.bind = bind
        self.port = worker.plan["port"]
        self.protocol = None
        self.ready = defer.Deferred()
        self.established = False
        self.unacked = 0
        self.acked = 0
        self.seq = 0
        self.resend: list = []

    def connect(self) -> defer.Deferred:
        """Connect, log in and join; fires (or fails) with L{ready}, in bounded time."""
        plan = self.worker.plan
        self.connect_started = time.time()
        endpoint = wrapClientTLS(self.worker.trust, TCP4ClientEndpoint(
            reactor, plan["host"], self.port, timeout=CONNECT_TIMEOUT,
            bindAddress=(self.bind, 0)))
        factory = Factory.forProtocol(Line)
        factory.client = self
        endpoint.connect(factory).addErrback(self._failed)
        return self.ready.addTimeout(CONNECT_TIMEOUT, reactor)

    def _failed(self, failure) -> None:
        if not self.ready.called:
            self.ready.errback(failure)

    def _joined(self) -> None:
        if not self.ready.called:
            self.established = True
            self.ready.callback(self)

    def connected(self, protocol):
        self.protocol = protocol

    def lost(self, reason):
        """A connection that never got ready failed; one that did is counted lost."""
        self._failed(reason)
        if self.worker.watching and self.established:
            self.worker.count("connection lost")

    def delivered(self, token: bytes) -> None:
        self.worker.latency.add(time.time() - sent_at(token))
        self.worker.delivered += 1

    def may_send(self) -> bool:
        return True

    def fill(self) -> None:
        """Closed loop: keep the window full while the run lasts."""
        while self.worker.running and self.unacked < self.worker.plan["window"] \
                and self.room.may_send() and self.may_send():
            self.send_one()

    def acknowledged(self) -> None:
        self.unacked -= 1
        self.acked += 1
        if self.worker.plan["mode"] == "closed":
            self.fill()


class RelayClient(Client):
    def connected(self, protocol):
        super().connected(protocol)
        protocol.sendLine(b"JOIN " + self.room.name.encode())
        self._join_pending = True

    def received(self, line: bytes) -> None:
        if line == b"OK":
            if self._join_pending:
                self._join_pending = False
                self._joined()
            else:
                self.acknowledged()
        elif line.startswith(b"MSG "):
            self.delivered(line.split(b" ", 2)[2])

    def send_one(self) -> None:
        self.unacked += 1
        self.protocol.transport.write(b"MSG %s %s\n" % (self.room.name.encode(),
                                                        self.worker.token()))


class DaemonClient(Client):
    """Speaks securechat's line protocol: login, join, MSG with rotations.

    @param login: LOGIN to an existing account rather than REGISTER it.
    """

    def __init__(self, *args, login: bool = False):
        super().__init__(*args)
        self.login = login
        self.bucket = None
        self._held: collections.deque[bytes] = collections.deque()
        self._wake = None
        self._ids = 0
        self._replies: dict[bytes, defer.Deferred] = {}
        self._lines: dict[bytes, list[bytes]] = {}
        self._messages: dict[bytes, tuple] = {}

    # -- pacing ------------------------------------------------------------------

    def write(self, line: bytes) -> None:
        """Every line goes out within the announced flood limits; the excess waits."""
        if self.bucket is None or (not self._held and self.bucket.take(reactor.seconds())):
            self.protocol.transport.write(line)
            return
        self._held.append(line)
        self._wait()

    def may_send(self) -> bool:
        """Whether a line would go out now (a message waiting would carry a stale time)."""
        if self.bucket is None or (not self._held and not self.bucket.delay(reactor.seconds())):
            return True
        self._wait()
        return False

    def _wait(self) -> None:
        if self._wake is None:
            self._wake = reactor.callLater(self.bucket.delay(reactor.seconds()), self._woken)

    def _woken(self) -> None:
        self._wake = None
        now = reactor.seconds()
        while self._held and self.bucket.take(now):
            self.protocol.transport.write(self._held.popleft())
        if self._held:
            self._wait()
        elif self.worker.plan.get("mode") == "closed":
            self.fill()

    def lost(self, reason):
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        super().lost(reason)

    # -- requests ------------------------------------------------------------------

    def request(self, verb: str, *args: str) -> defer.Deferred:
        """Fire with a L{Reply}: the final OK and the data lines before it."""
        self._ids += 1
        request_id = str(self._ids).encode()
        d = defer.Deferred()
        self._replies[request_id] = d
        self._lines[request_id] = []
        self.write(encode_frame(verb, request_id.decode(), *args) + b"\n")
        return d

    def received(self, line: bytes) -> None:
        verb, _, rest = line.partition(b" ")
        request_id = rest.partition(b" ")[0]
        if verb == b"MESSAGE" and request_id == b"*":
            self.delivered(line.split(b" ", 9)[8])
        elif request_id in self._messages and verb in (b"OK", b"ERROR", b"DUPLICATE"):
            self._message_reply(request_id, verb, line)
        elif verb == b"HELLO":
            self._hello(parse_line(line))
        elif verb in (b"OK", b"ERROR") and request_id in self._replies:
            d = self._replies.pop(request_id)
            lines = self._lines.pop(request_id)
            frame = parse_line(line)
            if verb == b"OK":
                d.callback(Reply(frame, lines))
            else:
                d.errback(RuntimeError(f"{frame.args[0]}: {frame.args[1]}"))
        elif request_id in self._lines:
            self._lines[request_id].append(line)
        elif verb == b"PING":
            self.write(encode_frame("PONG", request_id.decode()) + b"\n")
        elif verb == b"ERROR":
            self.worker.count(line.split(b" ")[2].decode())

    @defer.inlineCallbacks
    def _hello(self, frame):
        try:
            hello = SERVER_VERBS["HELLO"].bind(frame)
            signature = b64encode(login_signature(
                self.identity, hello["server"], self.nick, hello["nonce"],
                tls_exporter(self.protocol.transport)))
            if self.login:
                reply = yield self.request("LOGIN", self.nick, signature)
            else:
                public = self.identity.public
                reply = yield self.request("REGISTER", self.nick, b64encode(public.sign_der),
                                           b64encode(public.enc_der),
                                           b64encode(public.enc_signature), signature)
            # OK <nick> <lines per second> <burst>: pace below both, as the client does.
            _, rate, burst = reply.frame.args
            self.bucket = TokenBucket(float(rate) * PACING_MARGIN,
                                      max(1.0, float(burst) * PACING_MARGIN),
                                      reactor.seconds())
            yield self.room.joined(self)
            self._joined()
        except Exception as error:
            self._failed(error)

    # -- messages ------------------------------------------------------------------

    def send_one(self, message=None) -> None:
        if message is None:
            self.seq += 1
            message = (self.seq, b64encode(os.urandom(16)).encode(), self.worker.token())
        if not self.room.may_send():
            self.resend.append(message)
            self.room.settle()
            return
        self._ids += 1
        request_id = str(self._ids).encode()
        self._messages[request_id] = (message, self.room.epoch)
        self.unacked += 1
        self.room.sent += 1
        seq, message_id, token = message
        self.write(b"MSG %s %s %d %d %s %s %s\n" % (
            request_id, self.room.name.encode(), self.room.epoch, seq, message_id, token,
            self.worker.signature))

    def _message_reply(self, request_id: bytes, verb: bytes, line: bytes) -> None:
        message, epoch = self._messages.pop(request_id)
        if verb != b"ERROR":
            self.acknowledged()
            self.room.settle()
            return
        self.unacked -= 1
        code = line.split(b" ")[2].decode()
        if code in ("REKEY_REQUIRED", "STALE_EPOCH"):
            # As a client does: re-key if nobody did since, then send it again.
            if epoch == self.room.epoch:
                self.room.rotate()
            self.send_one(message)
        elif code == "RATE_LIMITED":
            # Should not happen when paced: counted, and sent again a second later.
            self.worker.count(code)
            self.unacked += 1
            reactor.callLater(1.0, self._retry, message)
        else:
            self.worker.count(code)
        self.room.settle()

    def _retry(self, message) -> None:
        self.unacked -= 1
        self.send_one(message)

    def resume(self) -> None:
        pending, self.resend = self.resend, []
        for message in pending:
            self.send_one(message)
        if self.worker.plan["mode"] == "closed":
            self.fill()


class Room:
    """A room's members, its log, and (for the daemon) its key epochs, signed in
    advance.

    Members join one after another, each appending their join to the log as
    the real client does. As the real client does, senders stop at the
    epoch's 100 messages and the owner rotates once they are all
    acknowledged, rather than sending on into REKEY_REQUIRED refusals that
    would waste the flood allowance.
    """

    def __init__(self, name: str):
        self.name = name
        self.members: list[Client] = []
        self.epoch = 0
        self.sent = 0
        self.rotating = False
        self.state = RoomState(room=name)
        self._joins = defer.succeed(None)
        self._chain: list[tuple[str, str, str, str]] = []

    def prepare_chain(self, count: int, now: int) -> None:
        """The owner's next C{count} epoch entries, each for the owner alone."""
        owner = self.members[0].identity
        state = self.state.copy()
        for _ in range(count):
            _, signed, wraps = author.epoch(owner, state, [owner.public], "benchmark", now)
            self._chain.append((str(signed.entry.index), b64encode(signed.data),
                                b64encode(signed.signature), b64encode(wraps[owner.fingerprint])))
            state.apply(signed, verify=False)

    def may_send(self) -> bool:
        return not self.rotating and (not self._chain or self.sent < ROTATE_AFTER_MESSAGES)

    def settle(self) -> None:
        """Rotate once the epoch is used up and nothing sent in it is unanswered."""
        if self._chain and self.sent >= ROTATE_AFTER_MESSAGES \
                and not any(m.unacked for m in self.members):
            self.rotate()

    def joined(self, client) -> defer.Deferred:
        """Append C{client}'s join (or the room's genesis), after the joins before it."""
        result = defer.Deferred()
        self._joins.addCallback(lambda _: self._join(client).chainDeferred(result))
        return result

    @defer.inlineCallbacks
    def _join(self, client):
        """The join entry, built again on the log's new end if another process
        appended first (members of one room may live in several workers)."""
        state, me = self.state, client.identity
        for _ in range(JOIN_ATTEMPTS):
            if not state.length:
                signed = author.genesis(me, self.name, client.nick, int(time.time()))
            else:
                signed = author.join(me, state, client.nick, int(time.time()))
            try:
                reply = yield client.request("JOIN", self.name, str(signed.entry.index),
                                             b64encode(signed.data),
                                             b64encode(signed.signature))
            except RuntimeError as error:
                if not str(error).startswith(("LOG_CONFLICT", "BAD_ENTRY")):
                    raise
                yield self._catch_up(client)
                continue
            [room] = [SERVER_VERBS["ROOM"].bind(parse_line(raw)) for raw in reply.lines
                      if raw.startswith(b"ROOM ")]
            if room["log_length"] > signed.entry.index:
                state.apply(signed, verify=False)
            # Else a member already (a connection of an account in the room):
            # nothing was appended.
            return
        raise RuntimeError(f"could not join {self.name}: its log kept moving")

    @defer.inlineCallbacks
    def _catch_up(self, client):
        reply = yield client.request("LOG", self.name, str(self.state.length))
        for raw in reply.lines:
            fields = SERVER_VERBS["ENTRY"].bind(parse_line(raw))
            self.state.apply(SignedEntry.decode(fields["entry"], fields["signature"]),
                             verify=False)

    def rotate(self) -> None:
        """One rotation at a time, by the room's owner, with the next signed entry."""
        owner = self.members[0]
        if self.rotating:
            return
        if self.epoch >= len(self._chain):
            owner.worker.count("ran out of prepared epochs")
            return
        self.rotating = True
        d = owner.request("ROTATE", self.name, *self._chain[self.epoch])
        d.addCallbacks(self._rotated, self._refused)

    def _refused(self, failure) -> None:
        self.rotating = False
        self.members[0].worker.count("ROTATE " + failure.getErrorMessage().split(":")[0])

    def _rotated(self, _):
        self.epoch += 1
        self.sent = 0
        self.rotating = False
        for member in self.members:
            member.resume()


def connect_all(clients, in_flight: int) -> defer.Deferred:
    """Connect C{clients} in order, at most C{in_flight} at a time; fire with the
    failures (a list of (client, Failure)) once every one succeeded or failed."""
    failures = []

    def one(client):
        d = client.connect()
        d.addErrback(lambda failure: failures.append((client, failure)))
        return d

    work = (one(client) for client in clients)
    cooperator = task.Cooperator()
    d = defer.DeferredList([cooperator.coiterate(work) for _ in range(in_flight)])
    return d.addCallback(lambda _: failures)


class Worker(Peers):
    """The fanout scenarios: rooms of members, a few senders each, for a while."""

    def __init__(self, plan: dict):
        super().__init__(plan)
        self.signature = b64encode(os.urandom(SIGNATURE_BYTES)).encode()
        self._body = os.urandom(plan["token_bytes"] - 8)
        self.rooms: list[Room] = []
        self.clients: list[Client] = []

    def token(self) -> bytes:
        """A message token stamped with the send time; no encryption in the window."""
        return base64.urlsafe_b64encode(struct.pack(">d", time.time()) + self._body) \
            .rstrip(b"=")

    @defer.inlineCallbacks
    def setup(self):
        plan = self.plan
        keys = identities.load(index for spec in plan["rooms"] for _, index, _ in spec["members"])
        kind = DaemonClient if plan["server"] == "daemon" else RelayClient
        for spec in plan["rooms"]:
            room = Room(spec["name"])
            self.rooms.append(room)
            for nick, index, bind in spec["members"]:
                client = kind(self, nick, keys[index], room, bind)
                # Several daemons: every room has members on each.
                ports = plan.get("ports", [plan["port"]])
                client.port = ports[index % len(ports)]
                room.members.append(client)
                self.clients.append(client)
        for room in self.rooms:
            # The owner first, so that the room exists and is theirs; the first
            # key once everyone is in (each newcomer would demand another).
            yield self._connect(room.members[:1])
            yield self._connect(room.members[1:])
            if plan["server"] == "daemon":
                room.prepare_chain(plan["epochs"], int(time.time()))
                room.rotate()
        for _ in range(600):
            if not any(room.rotating for room in self.rooms):
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        if plan["server"] == "daemon" and any(room.epoch == 0 for room in self.rooms):
            raise RuntimeError(f"no first key in {self.errors or 'time'}")

    @defer.inlineCallbacks
    def _connect(self, clients):
        failures = yield connect_all(clients, 50)
        if failures:
            failures[0][1].raiseException()

    @defer.inlineCallbacks
    def run(self):
        plan = self.plan
        senders = [c for room in self.rooms for c in room.members[:plan["senders_per_room"]]]
        self.running = self.watching = True
        started = cpu_seconds()
        calls = []
        if plan["mode"] == "closed":
            for client in senders:
                client.fill()
        else:
            # A late tick sends every message it owes: the offered load holds even
            # when this process falls behind (it would be lower, and unsaid, if
            # missed ticks were skipped).
            interval = len(senders) / plan["rate"] if senders else 1.0
            for n, client in enumerate(senders):
                call = task.LoopingCall.withCount(
                    lambda count, client=client: [client.send_one() for _ in range(count)])
                reactor.callLater(n * interval / len(senders), call.start, interval)
                calls.append(call)
        yield task.deferLater(reactor, plan["duration"], lambda: None)
        self.running = False
        for call in calls:
            if call.running:
                call.stop()
        # Let what is in flight arrive: until every send is answered and deliveries stop.
        waited, last = 0.0, -1
        while waited < plan["drain"] and (any(c.unacked or c.resend for c in senders)
                                          or last != self.delivered):
            last = self.delivered
            yield task.deferLater(reactor, 0.2, lambda: None)
            waited += 0.2
        members = {room.name: len(room.members) for room in self.rooms}
        return {
            "sent": sum(c.acked for c in senders),
            "expected": sum(c.acked * (members[c.room.name] - 1) for c in senders),
            "delivered": self.delivered,
            "latency": self.latency.counts,
            "errors": self.errors,
            "cpu": cpu_seconds() - started,
        }


class Control(LineReceiver):
    """The orchestrator's channel: a plan, then commands ("go", then whatever the
    worker has a method for); each answer is one JSON line. The worker ends when
    the orchestrator closes the channel."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 24

    def __init__(self, worker_class):
        self.worker_class = worker_class

    def lineReceived(self, line):  # noqa: N802
        if line.startswith(b"{"):
            self.worker = self.worker_class(json.loads(line))
            self._answer(self.worker.setup, "ready")
        else:
            command = line.decode()
            self._answer(getattr(self.worker, "run" if command == "go" else command), command)

    def _answer(self, method, key: str) -> None:
        d = defer.maybeDeferred(method)
        d.addCallback(lambda value: self.sendLine(json.dumps({key: value}).encode()))
        d.addErrback(lambda failure: self.sendLine(
            json.dumps({"error": failure.getErrorMessage()}).encode()))

    def connectionLost(self, reason):  # noqa: N802
        if reactor.running:
            reactor.stop()


def serve(worker_class) -> None:
    """Run a worker process for the orchestrator (see benchmarks.processes)."""
    stdio.StandardIO(Control(worker_class))
    reactor.run()


if __name__ == "__main__":
    serve(Worker)
