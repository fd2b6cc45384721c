"""Several client sessions and one daemon in one process: the real server
service and the real client core, wired by twisted.test.iosim pumps and
driven by one task.Clock. Deterministic, and no sockets."""

import copy
import json

from twisted.test import iosim

from securechat.client.protocol import ClientProtocol
from securechat.client.session import ClientSession
from tests.identities import identity
from tests.serverharness import Server

# Both ends of every fake connection derive this "TLS exporter".
BINDING = b"\x42" * 32


def binding(transport) -> bytes:
    return BINDING


class Rig:
    """One user's client: the session, every event it emitted, its saved state."""

    def __init__(self, network, name, state=None, key=None, **options):
        """@param key: whose identity key the client has (default: C{name}'s);
            a user whose keys were reset comes back with another."""
        self.network = network
        self.name = name
        self.key = key or name
        self.saved = copy.deepcopy(state) if state else {}
        self.events = []
        self.session = ClientSession(identity(self.key), name, copy.deepcopy(self.saved),
                                     network.clock, self._save, binding, **options)
        self.session.subscribe(self.events.append)
        self.pump = None
        # Every line this client wrote to the server, for tests of what it never says.
        self.sent: list[bytes] = []

    def _save(self, state):
        self.saved = json.loads(json.dumps(state))

    def of(self, kind):
        """The fields of every event of C{kind} so far."""
        return [e.fields for e in self.events if e.kind == kind]

    def texts(self):
        return [(m["from"], m["text"]) for m in self.of("message")]

    def clear(self):
        self.events.clear()

    def sent_verbs(self) -> set[str]:
        return {line.split(b" ", 1)[0].decode() for line in self.sent}


class Network:
    def __init__(self, **server_options):
        self.server = Server(**server_options)
        self.server.factory.channel_binding = binding
        self.clock = self.server.clock
        self.rigs = []

    def client(self, name, state=None, connect=True, key=None, **options) -> Rig:
        rig = Rig(self, name, state, key, **options)
        self.rigs.append(rig)
        if connect:
            self.connect(rig)
        return rig

    def members(self, *names, room="#lab") -> list[Rig]:
        """Clients of C{names}, each joined to C{room} in turn (the first makes it)."""
        rigs = [self.client(name) for name in names]
        for rig in rigs:
            rig.session.join(room)
            self.settle()
        return rigs

    def connect(self, rig: Rig, wire=None) -> None:
        """Connect C{rig}'s client to the server; C{wire}, if given, is handed the
        client protocol to put itself between it and the wire (and record what
        the client sends), before the connection is made."""
        server_protocol = self.server.factory.buildProtocol(None)
        client_protocol = ClientProtocol(rig.session, self.clock)
        write = client_protocol.send_line

        def recording(line: bytes) -> None:
            rig.sent.append(line)
            write(line)

        if wire is None:
            client_protocol.send_line = recording
        else:
            wire(client_protocol)
        rig.pump = iosim.connect(
            server_protocol, iosim.makeFakeServer(server_protocol),
            client_protocol, iosim.makeFakeClient(client_protocol),
            greet=False, clock=self.clock,
        )
        self.settle()

    def disconnect(self, rig: Rig) -> None:
        rig.pump.clientIO.loseConnection()
        self.settle()
        rig.pump = None

    def restart_client(self, rig: Rig, **options) -> Rig:
        """The same user starting their client again from its saved state."""
        if rig.pump is not None:
            self.disconnect(rig)
        self.clock.advance(0)
        return self.client(rig.name, rig.saved, key=rig.key, **options)

    def reset_user(self, name: str) -> str:
        """What C{securechat-admin user reset NAME} does: a one-time token with
        which the user registers their nick again, with new keys."""
        from securechat.server.passwords import new_registration_token, token_digest

        service = self.server.service
        token = new_registration_token()
        service.store.add_registration_token(token_digest(token), self.clock.seconds(),
                                             resets=service.accounts.find(name).id)
        self.clock.advance(0)
        return token

    def settle(self, limit=5000) -> None:
        """Move data and run due timers until nothing happens (short timers included)."""
        for _ in range(limit):
            moved = False
            for rig in self.rigs:
                if rig.pump is not None:
                    moved = rig.pump.pump() or moved
            if moved:
                continue
            due = [c.getTime() for c in self.clock.getDelayedCalls()]
            soon = [t for t in due if t - self.clock.seconds() <= 1.0]
            if not soon:
                return
            self.clock.advance(max(0.0, min(soon) - self.clock.seconds()))
        raise AssertionError("the network did not settle")
