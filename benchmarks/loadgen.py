"""A load-generator worker: many chat clients in one process, on the
project's wire codec, trust and login code, with no UI and no live crypto.

The orchestrator (benchmarks.run) starts several workers, sends each a plan
(one JSON line on stdin), waits until all say they are ready, says "go", and
reads one JSON line of figures from each at the end. Everything expensive is
done before "go": identities are loaded, epoch records for the room key
rotations the daemon demands every 100 messages are signed in advance, and
message tokens are random bytes (the server never decrypts; receivers only
read the send time carried in the token's first 8 bytes).
"""

import base64
import json
import math
import os
import struct
import sys
import time

from twisted.internet import defer, reactor, stdio, task
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from benchmarks import identities
from securechat.client.trust import ServerTrust
from securechat.crypto.certificates import parse_fingerprint
from securechat.crypto.identity import login_signature
from securechat.crypto.roomkeys import new_epoch
from securechat.lineprotocol import tls_exporter
from securechat.wire import SERVER_VERBS, b64encode, encode_frame, parse_line

SIGNATURE_BYTES = 384
RECORD_MARGIN = 1.5


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


class Line(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def connectionMade(self):  # noqa: N802
        self.factory.client.connected(self)

    def lineReceived(self, line):  # noqa: N802
        self.factory.client.received(line)

    def connectionLost(self, reason):  # noqa: N802
        self.factory.client.lost(reason)


class Client:
    """One connection. Subclasses speak the daemon's protocol or the relay's."""

    def __init__(self, worker, nick: str, identity, room: "Room", bind: str):
        self.worker = worker
        self.nick = nick
        self.identity = identity
        self.room = room
        self.bind = bind
        self.protocol = None
        self.ready = defer.Deferred()
        self.unacked = 0
        self.acked = 0
        self.seq = 0
        self.sending = False
        self.resend: list = []

    def connect(self):
        plan = self.worker.plan
        trust = ServerTrust(plan["host"], fingerprint=parse_fingerprint(plan["fingerprint"]))
        endpoint = wrapClientTLS(trust, HostnameEndpoint(
            reactor, plan["host"], plan["port"], timeout=30, bindAddress=(self.bind, 0)))
        factory = Factory.forProtocol(Line)
        factory.client = self
        return endpoint.connect(factory)

    def connected(self, protocol):
        self.protocol = protocol

    def lost(self, reason):
        if self.worker.running:
            self.worker.errors["connection lost"] = self.worker.errors.get("connection lost", 0) + 1

    def delivered(self, token: bytes) -> None:
        self.worker.latency.add(time.time() - sent_at(token))
        self.worker.delivered += 1

    def fill(self) -> None:
        """Closed loop: keep the window full while the run lasts."""
        while self.worker.running and self.unacked < self.worker.plan["window"] \
                and not self.room.rotating:
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
                self.ready.callback(self)
            else:
                self.acknowledged()
        elif line.startswith(b"MSG "):
            self.delivered(line.split(b" ", 2)[2])

    def send_one(self) -> None:
        self.unacked += 1
        self.protocol.transport.write(b"MSG %s %s\n" % (self.room.name.encode(),
                                                        self.worker.token()))


class DaemonClient(Client):
    """Speaks securechat's line protocol: login, join, MSG with rotations."""

    def __init__(self, *args):
        super().__init__(*args)
        self._ids = 0
        self._replies: dict[bytes, object] = {}
        self._messages: dict[bytes, tuple] = {}

    def request(self, verb: str, *args: str) -> defer.Deferred:
        self._ids += 1
        request_id = str(self._ids)
        d = defer.Deferred()
        self._replies[request_id.encode()] = d
        self.protocol.sendLine(encode_frame(verb, request_id, *args))
        return d

    def received(self, line: bytes) -> None:
        if line.startswith(b"MESSAGE "):
            self.delivered(line.split(b" ", 9)[8])
            return
        verb, _, rest = line.partition(b" ")
        request_id = rest.partition(b" ")[0]
        if request_id in self._messages and verb in (b"OK", b"ERROR", b"DUPLICATE"):
            self._message_reply(request_id, verb, line)
        elif verb == b"HELLO":
            self._hello(parse_line(line))
        elif verb in (b"OK", b"ERROR") and request_id in self._replies:
            d = self._replies.pop(request_id)
            frame = parse_line(line)
            if verb == b"OK":
                d.callback(frame)
            else:
                d.errback(RuntimeError(f"{frame.args[0]}: {frame.args[1]}"))
        elif verb == b"PING":
            self.protocol.sendLine(encode_frame("PONG", request_id.decode()))

    @defer.inlineCallbacks
    def _hello(self, frame):
        try:
            hello = SERVER_VERBS["HELLO"].bind(frame)
            signature = b64encode(login_signature(
                self.identity, hello["server"], self.nick, hello["nonce"],
                tls_exporter(self.protocol.transport)))
            public = self.identity.public
            yield self.request("REGISTER", self.nick, b64encode(public.sign_der),
                               b64encode(public.enc_der), b64encode(public.enc_signature),
                               signature)
            yield self.room.joined(self)
            self.ready.callback(self)
        except Exception as error:
            self.ready.errback(error)

    def send_one(self, message=None) -> None:
        if message is None:
            self.seq += 1
            message = (self.seq, b64encode(os.urandom(16)).encode(), self.worker.token())
        if self.room.rotating:
            self.resend.append(message)
            return
        self._ids += 1
        request_id = str(self._ids).encode()
        self._messages[request_id] = (message, self.room.epoch)
        self.unacked += 1
        seq, message_id, token = message
        self.protocol.transport.write(b"MSG %s %s %d %d %s %s %s\n" % (
            request_id, self.room.name.encode(), self.room.epoch, seq, message_id, token,
            self.worker.signature))

    def _message_reply(self, request_id: bytes, verb: bytes, line: bytes) -> None:
        message, epoch = self._messages.pop(request_id)
        if verb != b"ERROR":
            self.acknowledged()
            return
        self.unacked -= 1
        code = line.split(b" ")[2].decode()
        if code in ("REKEY_REQUIRED", "STALE_EPOCH"):
            # As a client does: re-key if nobody did since, then send it again.
            if epoch == self.room.epoch:
                self.room.rotate()
            self.send_one(message)
        elif code == "RATE_LIMITED":
            # Over the flood limit: counted, and sent again a second later.
            self.worker.errors[code] = self.worker.errors.get(code, 0) + 1
            self.unacked += 1
            reactor.callLater(1.0, self._retry, message)
        else:
            self.worker.errors[code] = self.worker.errors.get(code, 0) + 1

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
    """A room's members, and (for the daemon) its key epochs, signed in advance."""

    def __init__(self, name: str):
        self.name = name
        self.members: list[Client] = []
        self.epoch = 0
        self.rotating = False
        self._chain: list[tuple[str, str, str]] = []

    def prepare_chain(self, count: int, now: int) -> None:
        owner = self.members[0].identity
        previous = None
        for epoch in range(1, count + 1):
            _, record, signature, wraps = new_epoch(owner, self.name, epoch, previous, None,
                                                    [owner.public], "benchmark", "joined", now)
            self._chain.append((b64encode(record.encode()), b64encode(signature),
                                b64encode(wraps[owner.fingerprint])))
            previous = record

    def joined(self, client) -> defer.Deferred:
        return client.request("JOIN", self.name)

    def rotate(self) -> None:
        """One rotation at a time, by the room's owner, with the next signed record."""
        if self.rotating:
            return
        if self.epoch >= len(self._chain):
            raise RuntimeError(f"{self.name}: ran out of prepared epochs")
        self.rotating = True
        record, signature, wrap = self._chain[self.epoch]
        d = self.members[0].request("ROTATE", self.name, str(self.epoch + 1), record, signature,
                                    wrap)
        d.addCallback(self._rotated)
        d.addErrback(lambda f: print(f"rotation failed: {f.getErrorMessage()}",
                                     file=sys.stderr))

    def _rotated(self, _):
        self.epoch += 1
        self.rotating = False
        for member in self.members:
            member.resume()


class Worker:
    def __init__(self, plan: dict):
        self.plan = plan
        self.running = False
        self.delivered = 0
        self.errors: dict[str, int] = {}
        self.latency = Histogram()
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
                room.members.append(client)
                self.clients.append(client)
        for room in self.rooms:
            # The owner first, so that the room exists and is theirs.
            yield self._connect(room.members[:1])
            if plan["server"] == "daemon":
                room.prepare_chain(plan["epochs"], int(time.time()))
                room.rotate()
            yield self._connect(room.members[1:])
        while any(room.rotating for room in self.rooms):
            yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def _connect(self, clients):
        for start in range(0, len(clients), 50):
            batch = clients[start:start + 50]
            for client in batch:
                client.connect().addErrback(client.ready.errback)
            yield defer.gatherResults([c.ready for c in batch], consumeErrors=True)

    @defer.inlineCallbacks
    def run(self):
        plan = self.plan
        senders = [c for room in self.rooms for c in room.members[:plan["senders_per_room"]]]
        self.running = True
        started = os.times()
        calls = []
        if plan["mode"] == "closed":
            for client in senders:
                client.fill()
        else:
            interval = len(senders) / plan["rate"] if senders else 1.0
            for n, client in enumerate(senders):
                call = task.LoopingCall(client.send_one)
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
        ended = os.times()
        members = {room.name: len(room.members) for room in self.rooms}
        return {
            "sent": sum(c.acked for c in senders),
            "expected": sum(c.acked * (members[c.room.name] - 1) for c in senders),
            "delivered": self.delivered,
            "latency": self.latency.counts,
            "errors": self.errors,
            "cpu": (ended.user - started.user) + (ended.system - started.system),
        }


class Control(LineReceiver):
    """The orchestrator's channel: a plan, then "go"; figures come back as JSON lines."""

    delimiter = b"\n"

    def lineReceived(self, line):  # noqa: N802
        if line.startswith(b"{"):
            self.worker = Worker(json.loads(line))
            self.worker.setup().addCallbacks(self._ready, self._failed)
        elif line == b"go":
            self.worker.run().addCallbacks(self._done, self._failed)

    def _ready(self, _):
        self.sendLine(json.dumps({"ready": True}).encode())

    def _done(self, figures):
        self.sendLine(json.dumps({"figures": figures}).encode())
        reactor.callLater(0, reactor.stop)

    def _failed(self, failure):
        self.sendLine(json.dumps({"error": failure.getErrorMessage()}).encode())
        reactor.callLater(0, reactor.stop)


def main() -> None:
    stdio.StandardIO(Control())
    reactor.run()


if __name__ == "__main__":
    main()
