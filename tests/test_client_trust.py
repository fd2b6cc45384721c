"""Tests for securechat.client.trust: which daemons the client will talk to,
over real TLS on 127.0.0.1."""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.trial.unittest import SynchronousTestCase, TestCase

from securechat.client.trust import ServerTrust
from securechat.crypto.certificates import certificate_fingerprint, generate_self_signed
from securechat.server.tls import ReloadableServerTLS, RefusingTLSFactory
from tests.test_server_tls import Probe, TrackingServerFactory

NOW = datetime.datetime.now(datetime.timezone.utc)


def san_less_certificate():
    """A certificate with only a common name: exactly what we must refuse."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class TrustTests(TestCase):
    def serve(self, cert_pem, key_pem):
        directory = self.mktemp()
        os.mkdir(directory)
        paths = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
        for path, data in zip(paths, (cert_pem, key_pem)):
            with open(path, "wb") as f:
                f.write(data)
        factory = TrackingServerFactory(self)
        port = reactor.listenTCP(0, RefusingTLSFactory(ReloadableServerTLS(*paths), False, factory),
                                 interface="127.0.0.1")
        self.addCleanup(lambda: port.stopListening().addCallback(
            lambda _: defer.gatherResults(factory.lost)))
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        return port.getHost().port

    @defer.inlineCallbacks
    def attempt(self, port, trust):
        protocol = yield connectProtocol(
            wrapClientTLS(trust, TCP4ClientEndpoint(reactor, "127.0.0.1", port)), Probe())
        try:
            yield protocol.greeted
            return True
        except Exception:
            return False
        finally:
            protocol.transport.loseConnection()
            yield protocol.lost

    @defer.inlineCallbacks
    def test_pinned_fingerprint_accepted(self):
        """The pinned certificate, for the host we dialled, is accepted."""
        port = self.serve(*generate_self_signed(["localhost", "127.0.0.1"], NOW))
        trust = ServerTrust("127.0.0.1", fingerprint=certificate_fingerprint(self.cert))
        self.assertTrue((yield self.attempt(port, trust)))
        self.assertIsNone(trust.refusal)

    @defer.inlineCallbacks
    def test_pin_mismatch_refused(self):
        """Another certificate than the pinned one is refused, with both fingerprints named."""
        port = self.serve(*generate_self_signed(["127.0.0.1"], NOW))
        trust = ServerTrust("127.0.0.1", fingerprint=b"\x01" * 32)
        self.assertFalse((yield self.attempt(port, trust)))
        self.assertIn("does not match the pinned 01:01", trust.refusal)

    @defer.inlineCallbacks
    def test_san_less_certificate_refused(self):
        """A certificate without subjectAltName is refused even when its fingerprint is pinned."""
        port = self.serve(*san_less_certificate())
        trust = ServerTrust("127.0.0.1", fingerprint=certificate_fingerprint(self.cert))
        self.assertFalse((yield self.attempt(port, trust)))
        self.assertEqual(trust.refusal, "server certificate has no subjectAltName; refusing it")

    @defer.inlineCallbacks
    def test_hostname_mismatch_refused(self):
        """A certificate for other names than the dialled host is refused."""
        port = self.serve(*generate_self_signed(["chat.example"], NOW))
        trust = ServerTrust("127.0.0.1", fingerprint=certificate_fingerprint(self.cert))
        self.assertFalse((yield self.attempt(port, trust)))
        self.assertIn("is for chat.example, not 127.0.0.1", trust.refusal)

    @defer.inlineCallbacks
    def test_ca_chain(self):
        """With --ca-file, a certificate that chains to it (and names the host) is accepted,
        and one that does not is refused."""
        cert_pem, key_pem = generate_self_signed(["127.0.0.1"], NOW)
        port = self.serve(cert_pem, key_pem)
        ca_file = self.mktemp()
        with open(ca_file, "wb") as f:
            f.write(cert_pem)
        self.assertTrue((yield self.attempt(port, ServerTrust("127.0.0.1", ca_file=ca_file))))
        other = self.mktemp()
        with open(other, "wb") as f:
            f.write(generate_self_signed(["127.0.0.1"], NOW)[0])
        trust = ServerTrust("127.0.0.1", ca_file=other)
        self.assertFalse((yield self.attempt(port, trust)))
        self.assertIn("does not chain", trust.refusal)


class ServerTrustArgumentsTests(SynchronousTestCase):
    def test_exactly_one_anchor(self):
        """Trust needs exactly one of a fingerprint or a CA file."""
        self.assertRaises(ValueError, ServerTrust, "h")
        self.assertRaises(ValueError, ServerTrust, "h", b"x" * 32, "ca.pem")
