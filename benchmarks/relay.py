"""The baseline: a bare chat relay over TLS, with no auth and no storage.

``JOIN room`` joins; ``MSG room payload`` is acknowledged with ``OK`` and
relayed verbatim to the room's other members. What our daemon adds on top
(accounts, durable history, keys, limits) is what the ratios measure.
"""

import sys

from twisted.internet import endpoints, reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory

from securechat.crypto.certificates import generate_self_signed
from securechat.server.tls import ReloadableServerTLS


class Relay(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def connectionMade(self):  # noqa: N802
        self.rooms = []

    def lineReceived(self, line):  # noqa: N802
        verb, _, rest = line.partition(b" ")
        if verb == b"JOIN":
            self.factory.rooms.setdefault(rest, set()).add(self)
            self.rooms.append(rest)
            self.sendLine(b"OK")
        elif verb == b"MSG":
            room = rest.partition(b" ")[0]
            self.sendLine(b"OK")
            data = line + b"\n"
            for member in self.factory.rooms.get(room, ()):
                if member is not self:
                    member.transport.write(data)

    def connectionLost(self, reason):  # noqa: N802
        for room in self.rooms:
            self.factory.rooms[room].discard(self)


def main(port: int, cert_dir: str) -> None:
    import datetime
    import os

    cert, key = generate_self_signed(["127.0.0.1"], datetime.datetime.now(datetime.timezone.utc))
    paths = [os.path.join(cert_dir, name) for name in ("relay-cert.pem", "relay-key.pem")]
    for path, data in zip(paths, (cert, key)):
        with open(path, "wb") as f:
            f.write(data)
    tls = ReloadableServerTLS(*paths)
    factory = Factory.forProtocol(Relay)
    factory.rooms = {}
    endpoint = endpoints.TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
    # The daemon's own TLS settings, so that the comparison is about everything else.
    endpoint.listen(TLSMemoryBIOFactory(tls, False, factory)).addCallback(
        lambda p: print(f"relay listening on 127.0.0.1:{p.getHost().port} "
                        f"sha256 Fingerprint={tls.fingerprint}", flush=True))
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
