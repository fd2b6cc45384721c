# -*- test-case-name: tests.test_client_trust -*-
"""How the client decides it is talking to the right daemon.

Either the server certificate's SHA-256 fingerprint is pinned, or it chains
to a CA the user named; in both cases the certificate must carry
subjectAltNames and one must match the host we dialled. We check the SAN
ourselves: with no SAN at all, Twisted's own hostname check fails open.
A refusal happens inside the TLS handshake, before any byte of ours is sent,
and L{ServerTrust.refusal} says why in one line.
"""

import ipaddress

from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from securechat.constants import TLS_CIPHERS
from securechat.crypto.certificates import (
    certificate_fingerprint,
    format_fingerprint,
    subject_alt_names,
)


def host_matches(certificate, host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    try:
        if ip is not None:
            verify_certificate_ip_address(certificate, str(ip))
        else:
            verify_certificate_hostname(certificate, host)
    except VerificationError:
        return False
    return True


@implementer(IOpenSSLClientConnectionCreator)
class ServerTrust:
    """TLS client settings that pin a fingerprint or trust a CA file, never neither.

    @ivar refusal: why the last handshake was refused, or None.
    @ivar seen_fingerprint: the fingerprint the server presented, for a
        first-contact prompt.
    """

    def __init__(self, host: str, fingerprint: bytes | None = None, ca_file: str | None = None):
        if (fingerprint is None) == (ca_file is None):
            raise ValueError("trust a server by exactly one of a fingerprint or a CA file")
        self.host = host
        self.fingerprint = fingerprint
        self.ca_file = ca_file
        self.refusal = None
        self.seen_fingerprint = None

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:  # noqa: N802
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_cipher_list(TLS_CIPHERS.encode())
        if self.ca_file:
            context.load_verify_locations(self.ca_file)
        context.set_verify(SSL.VERIFY_PEER, self._verify)
        connection = SSL.Connection(context, None)
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            connection.set_tlsext_host_name(self.host.encode("idna"))
        return connection

    def _verify(self, connection, x509, errno, depth, ok) -> bool:
        if depth != 0:
            return bool(ok) if self.ca_file else True
        certificate = x509.to_cryptography()
        self.seen_fingerprint = format_fingerprint(certificate_fingerprint(certificate))
        self.refusal = self._check_leaf(certificate, ok, errno)
        return self.refusal is None

    def _check_leaf(self, certificate, ok, errno) -> str | None:
        if self.fingerprint is not None:
            if certificate_fingerprint(certificate) != self.fingerprint:
                return (f"server certificate fingerprint {self.seen_fingerprint} does not match "
                        f"the pinned {format_fingerprint(self.fingerprint)}")
        elif not ok:
            return f"server certificate does not chain to {self.ca_file} (OpenSSL error {errno})"
        if not subject_alt_names(certificate):
            return "server certificate has no subjectAltName; refusing it"
        if not host_matches(certificate, self.host):
            return (f"server certificate is for {', '.join(subject_alt_names(certificate))}, "
                    f"not {self.host}")
        return None
