"""Tests for securechat.server.tls, over real TLS on 127.0.0.1."""

import datetime
import os

from cryptography import x509
from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from securechat.crypto.certificates import (
    certificate_fingerprint,
    format_fingerprint,
    generate_self_signed,
    subject_alt_names,
)
from securechat.server.protocol import ServerFactory
from securechat.server.tls import (
    ReloadableServerTLS,
    TLSMaterialError,
    ensure_self_signed,
    hardened_options,
)
from tests.serverharness import make_service

NOW = datetime.datetime.now(datetime.timezone.utc)


@implementer(IOpenSSLClientConnectionCreator)
class ProbeClientTLS:
    """A client whose OpenSSL context a test configures freely (old versions included)."""

    def __init__(self, configure=lambda context: None):
        self.configure = configure

    def clientConnectionForTLS(self, tlsProtocol):  # noqa: N802
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_verify(SSL.VERIFY_NONE)
        self.configure(context)
        return SSL.Connection(context, None)


class Probe(Protocol):
    """Fires C{greeted} on the first full line, or errbacks with why the connection died."""

    def __init__(self):
        self.received = b""
        self.greeted = defer.Deferred()
        self.lost = defer.Deferred()

    def dataReceived(self, data):  # noqa: N802
        self.received += data
        if b"\n" in self.received and not self.greeted.called:
            self.greeted.callback(self)

    def connectionLost(self, reason):  # noqa: N802
        if not self.greeted.called:
            self.greeted.errback(reason)
        self.lost.callback(None)


class TrackingServerFactory(ServerFactory):
    """A ServerFactory that lets the test wait for every server-side connection to end.
    Its service runs on the real reactor (a reply leaves when the reactor's turn
    ends), so C{test} stops it."""

    def __init__(self, test):
        super().__init__(make_service(reactor), "test.example", reactor)
        test.addCleanup(self.service.stopService)
        self.lost = []

    def buildProtocol(self, addr):  # noqa: N802
        protocol = super().buildProtocol(addr)
        done = defer.Deferred()
        self.lost.append(done)
        original = protocol.connectionLost

        def connection_lost(reason):
            original(reason)
            done.callback(None)

        protocol.connectionLost = connection_lost
        return protocol


def write_pair(directory, names=("localhost", "127.0.0.1")):
    cert_pem, key_pem = generate_self_signed(list(names), NOW)
    os.makedirs(directory, exist_ok=True)
    paths = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    for path, data in zip(paths, (cert_pem, key_pem)):
        with open(path, "wb") as f:
            f.write(data)
    return paths, format_fingerprint(certificate_fingerprint(x509.load_pem_x509_certificate(cert_pem)))


class LoopbackTLSTests(TestCase):
    def setUp(self):
        self.directory = self.mktemp()
        (self.cert, self.key), self.fingerprint = write_pair(self.directory)
        self.tls = ReloadableServerTLS(self.cert, self.key)
        self.factory = TrackingServerFactory(self)
        self.port = reactor.listenTCP(
            0, TLSMemoryBIOFactory(self.tls, False, self.factory), interface="127.0.0.1"
        )

    @defer.inlineCallbacks
    def tearDown(self):
        yield self.port.stopListening()
        yield defer.gatherResults(self.factory.lost)

    @defer.inlineCallbacks
    def connect(self, configure=lambda context: None):
        endpoint = wrapClientTLS(
            ProbeClientTLS(configure),
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port),
        )
        probe = yield connectProtocol(endpoint, Probe())
        try:
            yield probe.greeted
        finally:
            probe.transport.loseConnection()
            yield probe.lost
        return probe

    def peer_fingerprint(self, probe):
        cert = probe.transport.getPeerCertificate().to_cryptography()
        return format_fingerprint(certificate_fingerprint(cert))

    @defer.inlineCallbacks
    def test_tls13_negotiated(self):
        """A modern client gets TLS 1.3 and the greeting line."""
        probe = yield self.connect()
        self.assertEqual(probe.transport.getHandle().get_protocol_version_name(), "TLSv1.3")
        self.assertTrue(probe.received.startswith(b"HELLO * securechat 2 test.example "))

    @defer.inlineCallbacks
    def test_tls12_uses_ecdhe_aead(self):
        """A TLS 1.2-only client is served, with an ECDHE key exchange and an AEAD cipher."""
        probe = yield self.connect(lambda c: c.set_max_proto_version(SSL.TLS1_2_VERSION))
        handle = probe.transport.getHandle()
        self.assertEqual(handle.get_protocol_version_name(), "TLSv1.2")
        cipher = handle.get_cipher_name()
        self.assertTrue(cipher.startswith("ECDHE-"), cipher)
        self.assertTrue("GCM" in cipher or "CHACHA20" in cipher, cipher)

    @defer.inlineCallbacks
    def test_tls11_refused(self):
        """A TLS 1.1 client is refused by the server with a protocol-version alert."""

        def tls11(context):
            context.set_min_proto_version(SSL.TLS1_1_VERSION)
            context.set_max_proto_version(SSL.TLS1_1_VERSION)
            context.set_cipher_list(b"DEFAULT@SECLEVEL=0")

        error = yield self.assertFailure(self.connect(tls11), SSL.Error)
        self.assertIn("alert protocol version", str(error))

    @defer.inlineCallbacks
    def test_cbc_only_client_refused(self):
        """A client offering only CBC suites (with or without ECDHE) is refused."""

        def cbc_only(context):
            context.set_max_proto_version(SSL.TLS1_2_VERSION)
            context.set_cipher_list(b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-SHA")

        error = yield self.assertFailure(self.connect(cbc_only), SSL.Error)
        self.assertIn("handshake failure", str(error))

    @defer.inlineCallbacks
    def test_reload_serves_new_certificate(self):
        """After reload(), the next handshake presents the new certificate."""
        first = yield self.connect()
        self.assertEqual(self.peer_fingerprint(first), self.fingerprint)
        _, new_fingerprint = write_pair(self.directory)
        self.assertTrue(self.tls.reload())
        second = yield self.connect()
        self.assertEqual(self.peer_fingerprint(second), new_fingerprint)
        self.assertEqual(self.tls.fingerprint, new_fingerprint)

    @defer.inlineCallbacks
    def test_broken_reload_keeps_old_certificate(self):
        """A reload from a broken file fails, and the old certificate keeps serving."""
        with open(self.cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\ngarbage\n")
        self.assertFalse(self.tls.reload())
        os.remove(self.key)
        self.assertFalse(self.tls.reload())
        probe = yield self.connect()
        self.assertEqual(self.peer_fingerprint(probe), self.fingerprint)


class GeneratedCertificateTests(TestCase):
    @defer.inlineCallbacks
    def test_generated_certificate_has_sans(self):
        """The certificate generated on first start is served and carries SANs for loopback."""
        data_dir = self.mktemp()
        os.mkdir(data_dir)
        tls = ReloadableServerTLS(*ensure_self_signed(data_dir, ("chat.example",)))
        factory = TrackingServerFactory(self)
        port = reactor.listenTCP(0, TLSMemoryBIOFactory(tls, False, factory), interface="127.0.0.1")
        endpoint = wrapClientTLS(
            ProbeClientTLS(), TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        )
        probe = yield connectProtocol(endpoint, Probe())
        yield probe.greeted
        names = subject_alt_names(probe.transport.getPeerCertificate().to_cryptography())
        probe.transport.loseConnection()
        yield probe.lost
        yield port.stopListening()
        yield defer.gatherResults(factory.lost)
        for name in ["localhost", "127.0.0.1", "::1", "chat.example"]:
            self.assertIn(name, names)


class MaterialTests(SynchronousTestCase):
    def test_mismatched_key_refused(self):
        """A key that does not belong to the certificate is a TLSMaterialError."""
        cert_pem, _ = generate_self_signed(["a"], NOW)
        _, other_key = generate_self_signed(["b"], NOW)
        self.assertRaises(TLSMaterialError, hardened_options, other_key, cert_pem)

    def test_garbage_refused(self):
        """Files that are not PEM are a TLSMaterialError, not a crash."""
        cert_pem, key_pem = generate_self_signed(["a"], NOW)
        self.assertRaises(TLSMaterialError, hardened_options, key_pem, b"nope")
        self.assertRaises(TLSMaterialError, hardened_options, b"nope", cert_pem)

    def test_ensure_self_signed_is_idempotent(self):
        """A second start reuses the existing certificate rather than making a new one."""
        data_dir = self.mktemp()
        os.mkdir(data_dir)
        cert, _ = ensure_self_signed(data_dir)
        with open(cert, "rb") as f:
            before = f.read()
        ensure_self_signed(data_dir)
        with open(cert, "rb") as f:
            self.assertEqual(f.read(), before)
