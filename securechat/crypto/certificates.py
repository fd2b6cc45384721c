"""Server certificates: generating a self-signed one and naming it by hash.

Pure functions over bytes; reading and writing files is the caller's job.
"""

import datetime
import ipaddress
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from securechat.constants import SELF_SIGNED_CURVE, SELF_SIGNED_VALID_DAYS

_HEX_FINGERPRINT = re.compile(r"[0-9a-f]{64}\Z")


def generate_self_signed(
    names: list[str], now: datetime.datetime
) -> tuple[bytes, bytes]:
    """A new key and a self-signed certificate for C{names}, both as PEM.

    Every name becomes a subjectAltName entry (IP addresses as such): a
    certificate without SANs makes service_identity fail open in Twisted, so
    we never produce one.

    @return: (certificate PEM, PKCS8 private key PEM, unencrypted: it sits in
        the owner-only data dir, where the daemon must read it unattended).
    """
    if not names:
        raise ValueError("a certificate needs at least one name")
    key = ec.generate_private_key(getattr(ec, SELF_SIGNED_CURVE)())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt_names = []
    for name in dict.fromkeys(names):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def certificate_fingerprint(certificate: x509.Certificate) -> bytes:
    """The SHA-256 of the certificate's DER: what clients pin."""
    return certificate.fingerprint(hashes.SHA256())


def format_fingerprint(digest: bytes) -> str:
    """Colon-separated upper-case hex, as ``openssl x509 -fingerprint`` prints."""
    return ":".join(f"{byte:02X}" for byte in digest)


def parse_fingerprint(text: str) -> bytes:
    """Accept a SHA-256 fingerprint as openssl prints it, or as plain hex.

    @raise ValueError: if C{text} is not 32 bytes of hex.
    """
    text = text.strip()
    if "=" in text:
        text = text.split("=", 1)[1]
    plain = text.replace(":", "").lower()
    if not _HEX_FINGERPRINT.match(plain):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits, optionally colon-separated")
    return bytes.fromhex(plain)


def subject_alt_names(certificate: x509.Certificate) -> list[str]:
    """The certificate's DNS and IP subjectAltNames; empty if it has none."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names = extension.value
    return [
        *names.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in names.get_values_for_type(x509.IPAddress)),
    ]
