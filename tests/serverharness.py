"""A daemon in a test: the real service on an in-memory SQLite store, driven
over StringTransport with a task.Clock, plus a scripted client that speaks
the wire protocol line by line."""

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from securechat.crypto.identity import login_signature
from securechat.server.protocol import ServerFactory
from securechat.server.rooms import RoomLimits
from securechat.server.service import ChatService, ServiceSettings
from securechat.server.sqlite_store import InlineRunner, SQLiteStore
from securechat.wire import SERVER_VERBS, b64decode, b64encode, encode_frame, parse_line
from securechat.wire.limits import AnnouncedLimits
from tests.identities import identity

SERVER_NAME = "test.example"

# Stands in for the TLS exporter: every StringTransport "session" has its own.
_bindings = {}


def fake_binding(transport) -> bytes:
    return _bindings.setdefault(id(transport), bytes([len(_bindings) % 256]) * 32)


def make_service(clock=None, registration="open", limits=RoomLimits(), path=":memory:",
                 fanout=None, store=None, **settings):
    """@param settings: other L{ServiceSettings} fields (storage, retention_days)."""
    service = ChatService(
        store or SQLiteStore(InlineRunner(path)),
        clock or task.Clock(),
        ServiceSettings(SERVER_NAME, registration, limits, **settings),
        run_blocking=defer.maybeDeferred,
        fanout=fanout,
    )
    service.startService()
    return service


class ScriptedClient:
    """One connection to the server, read and written as parsed frames."""

    def __init__(self, factory, address=("127.0.0.1", 40000)):
        self.clock = factory.clock
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", *address))
        self.protocol = factory.buildProtocol(IPv4Address("TCP", *address))
        self.protocol.makeConnection(self.transport)
        self.counter = 0
        self.backlog = []
        self.limits = None
        hello = self.frames()[0]
        self.nonce = SERVER_VERBS["HELLO"].bind(hello)["nonce"]

    def frames(self):
        """Everything received since last asked, parsed (the server's reactor
        turn ends first: that is when its held lines are written)."""
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        backlog, self.backlog = self.backlog, []
        return backlog + [parse_line(line) for line in data.split(b"\n")[:-1]]

    def send(self, verb, *args):
        """Send one request; @return: its request id."""
        self.counter += 1
        request_id = f"r{self.counter}"
        self.protocol.dataReceived(encode_frame(verb, request_id, *args) + b"\n")
        self.clock.advance(0)
        return request_id

    def request(self, verb, *args):
        """Send a request; @return: every frame received after it (replies and events)."""
        self.send(verb, *args)
        return self.frames()

    def login_signature(self, name, nick):
        return b64encode(
            login_signature(identity(name), SERVER_NAME, nick, self.nonce,
                            fake_binding(self.transport))
        )

    def register(self, name, nick=None, token=None):
        nick = nick or name
        public = identity(name).public
        args = [nick, b64encode(public.sign_der), b64encode(public.enc_der),
                b64encode(public.enc_signature), self.login_signature(name, nick)]
        return self.without_limits(self.request("REGISTER", *args, *([token] if token else [])))

    def login(self, name, nick=None):
        nick = nick or name
        return self.without_limits(self.request("LOGIN", nick, self.login_signature(name, nick)))

    def without_limits(self, frames):
        """The login's frames, its LIMITS line taken out and kept (parsed) in C{limits}."""
        if frames and frames[0].verb == "LIMITS":
            self.limits = AnnouncedLimits.parse(frames[0].args[0])
            return frames[1:]
        return frames


class Server:
    """A service, its factory and a way to open scripted connections."""

    def __init__(self, clock=None, **kwargs):
        self.clock = clock or task.Clock()
        self.service = make_service(self.clock, **kwargs)
        self.factory = ServerFactory(self.service, SERVER_NAME, self.clock, fake_binding)

    def connect(self, address=("127.0.0.1", 40000)) -> ScriptedClient:
        return ScriptedClient(self.factory, address)

    def user(self, name) -> ScriptedClient:
        """A connection registered as C{name} (or logged in, if already registered)."""
        client = self.connect()
        if self.service.accounts.find(name) is None:
            frames = client.register(name)
        else:
            frames = client.login(name)
        assert frames[0].verb == "OK", frames
        client.backlog = frames[1:]
        return client


def verbs_of(frames):
    return [f.verb for f in frames]


def decode(frame):
    return SERVER_VERBS[frame.verb].bind(frame)


__all__ = ["Server", "ScriptedClient", "make_service", "fake_binding", "verbs_of", "decode",
           "b64decode", "SERVER_NAME"]
