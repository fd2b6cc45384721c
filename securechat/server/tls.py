# -*- test-case-name: tests.test_server_tls -*-
"""Server-side TLS: hardened options, a certificate that can be swapped while
running, and the self-signed default for a first start with no configuration.
"""

import datetime
import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from securechat.constants import TLS_CIPHERS, TLS_MINIMUM_VERSION
from securechat.files import write_private
from securechat.crypto.certificates import (
    certificate_fingerprint,
    format_fingerprint,
    generate_self_signed,
)

log = Logger()

SELF_SIGNED_CERT = "server-cert.pem"
SELF_SIGNED_KEY = "server-key.pem"


class TLSMaterialError(Exception):
    """A certificate or key file that cannot serve; the text names the file."""


def hardened_options(key_pem: bytes, chain_pem: bytes) -> CertificateOptions:
    """Options allowing TLS 1.2+ with ECDHE and AEAD suites only.

    @raise TLSMaterialError: if the key or certificates do not parse, or the
        key does not belong to the first certificate.
    """
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as error:
        raise TLSMaterialError(f"no usable PEM certificate: {error}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise TLSMaterialError(f"no usable unencrypted PEM private key: {error}") from None
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        raiseMinimumTo=TLSVersion.lookupByName(TLS_MINIMUM_VERSION),
        acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(TLS_CIPHERS),
    )
    try:
        options.getContext()
    except SSL.Error as error:
        raise TLSMaterialError(f"key and certificate do not match: {error}") from None
    return options


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerTLS:
    """The TLS configuration of the listening port, replaceable in place.

    Each new handshake asks this object for a connection, so after
    L{reload} new connections get the new certificate while established
    ones carry on. A reload that fails leaves the old certificate serving.
    """

    def __init__(self, cert_path: str, key_path: str):
        self.cert_path = cert_path
        self.key_path = key_path
        self._options, self.fingerprint = self._load()

    def _load(self) -> tuple[CertificateOptions, str]:
        try:
            with open(self.cert_path, "rb") as f:
                chain_pem = f.read()
            with open(self.key_path, "rb") as f:
                key_pem = f.read()
        except OSError as error:
            raise TLSMaterialError(f"{error.filename}: {error.strerror}") from None
        try:
            options = hardened_options(key_pem, chain_pem)
        except TLSMaterialError as error:
            raise TLSMaterialError(f"{self.cert_path} / {self.key_path}: {error}") from None
        leaf = x509.load_pem_x509_certificate(chain_pem)
        return options, format_fingerprint(certificate_fingerprint(leaf))

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:  # noqa: N802
        return SSL.Connection(self._options.getContext(), None)

    def reload(self) -> bool:
        """Re-read the files; on failure log why and keep serving the old ones."""
        try:
            self._options, self.fingerprint = self._load()
        except TLSMaterialError as error:
            log.error("TLS reload failed, still serving the previous certificate: {error}",
                      error=str(error))
            return False
        log.info("TLS certificate reloaded: sha256 Fingerprint={fingerprint}",
                 fingerprint=self.fingerprint)
        return True


def ensure_self_signed(data_dir: str, extra_names: tuple[str, ...] = ()) -> tuple[str, str]:
    """Paths to the data dir's self-signed certificate and key, made if absent.

    The certificate names localhost, 127.0.0.1, ::1, this host and any
    C{extra_names}. The key is written owner-only before any byte of it is.
    """
    cert_path = os.path.join(data_dir, SELF_SIGNED_CERT)
    key_path = os.path.join(data_dir, SELF_SIGNED_KEY)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *extra_names]
    cert_pem, key_pem = generate_self_signed(
        [n for n in names if n], datetime.datetime.now(datetime.timezone.utc)
    )
    write_private(key_path, key_pem)
    write_private(cert_path, cert_pem)
    log.info("generated a self-signed TLS certificate in {path}", path=cert_path)
    return cert_path, key_path


class RefusingTLSFactory(TLSMemoryBIOFactory):
    """TLS around our factory, which may refuse a connection (return None):
    the socket is then closed before any handshake work is spent on it.

    Its connections encrypt each write at once: the daemon already joins the
    lines of a reactor turn into one write per connection (L{OutputBatch}),
    so Twisted's buffering TLS transport would only add a timer per write.
    """

    protocol = TLSMemoryBIOProtocol

    def buildProtocol(self, addr):  # noqa: N802
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)


class TLSServerService(StreamServerEndpointService):
    """Listens with TLS on an endpoint and says where, and with which certificate."""

    def __init__(self, endpoint, factory, tls: ReloadableServerTLS):
        super().__init__(endpoint, RefusingTLSFactory(tls, False, factory))
        self.tls = tls

    def privilegedStartService(self) -> None:  # noqa: N802
        """Listen now, and if that fails, exit non-zero with one line naming the
        address and why: a daemon that cannot listen must not look alive (as
        it would to systemd) while serving nobody."""
        self._raiseSynchronously = True
        try:
            super().privilegedStartService()
        except CannotListenError as error:
            reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
            host = error.interface or "*"
            raise SystemExit(f"securechat: cannot listen on {host}:{error.port}: "
                             f"{reason.lower()}") from None
        self._waitingForPort.addCallback(self._announce)

    def _announce(self, port):
        address = port.getHost()
        log.info("securechat listening on {host}:{port} (TLS)", host=address.host, port=address.port)
        log.info("TLS certificate sha256 Fingerprint={fingerprint}", fingerprint=self.tls.fingerprint)
        return port
