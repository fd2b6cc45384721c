"""Tests for securechat.crypto.certificates."""

import datetime
import shutil
import subprocess

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from securechat.crypto.certificates import (
    certificate_fingerprint,
    format_fingerprint,
    generate_self_signed,
    parse_fingerprint,
    subject_alt_names,
)

NOW = datetime.datetime(2026, 11, 22, tzinfo=datetime.timezone.utc)


class SelfSignedTests(SynchronousTestCase):
    def test_every_name_is_a_san(self):
        """DNS names and IP addresses all become subjectAltName entries."""
        cert_pem, _ = generate_self_signed(["localhost", "127.0.0.1", "::1", "chat"], NOW)
        cert = x509.load_pem_x509_certificate(cert_pem)
        self.assertEqual(
            sorted(subject_alt_names(cert)), sorted(["localhost", "chat", "127.0.0.1", "::1"])
        )

    def test_no_names_refused(self):
        """A certificate without names (hence without SANs) is never produced."""
        self.assertRaises(ValueError, generate_self_signed, [], NOW)

    def test_validity(self):
        """The certificate is valid from just before now for years, not days."""
        cert = x509.load_pem_x509_certificate(generate_self_signed(["a"], NOW)[0])
        self.assertLess(cert.not_valid_before_utc, NOW)
        self.assertGreater(cert.not_valid_after_utc, NOW + datetime.timedelta(days=365 * 4))


class FingerprintTests(SynchronousTestCase):
    def test_matches_openssl(self):
        """Our fingerprint string is exactly what openssl x509 -fingerprint -sha256 prints."""
        if not shutil.which("openssl"):
            raise self.skipTest("openssl is not installed")
        cert_pem, _ = generate_self_signed(["localhost"], NOW)
        printed = subprocess.run(
            ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
            input=cert_pem, capture_output=True, check=True,
        ).stdout.decode().strip()
        digest = certificate_fingerprint(x509.load_pem_x509_certificate(cert_pem))
        self.assertEqual(printed.split("=", 1)[1], format_fingerprint(digest))
        self.assertEqual(parse_fingerprint(printed), digest)

    def test_parse_forms(self):
        """Colon-separated, plain, lower- or upper-case hex all parse to the same bytes."""
        digest = bytes(range(32))
        for text in [format_fingerprint(digest), digest.hex(), digest.hex().upper(),
                     "sha256 Fingerprint=" + format_fingerprint(digest)]:
            self.assertEqual(parse_fingerprint(text), digest)

    def test_parse_rejects(self):
        """Wrong lengths and non-hex are refused."""
        for text in ["", "AB:CD", "zz" * 32, "00" * 31, "00" * 33]:
            self.assertRaises(ValueError, parse_fingerprint, text)
