# -*- test-case-name: tests.test_identity -*-
"""A user's two RSA keys: the identity key that signs and the encryption
subkey that receives wrapped room keys; fingerprints and safety numbers.

Pure: keys in, bytes out. Generating and storing keys is the keystore's job.
"""

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from securechat.constants import (
    OAEP_HASH,
    RSA_BITS,
    RSA_PUBLIC_EXPONENT,
    SAFETY_NUMBER_ITERATIONS,
    SIGNATURE_HASH,
)
from securechat.crypto import transcript as ctx


class IdentityError(Exception):
    """A public identity that is malformed, too weak or inconsistent."""


def _hash():
    return getattr(hashes, SIGNATURE_HASH)()


def _pss():
    return padding.PSS(mgf=padding.MGF1(_hash()), salt_length=padding.PSS.MAX_LENGTH)


def oaep(label: bytes) -> padding.OAEP:
    """OAEP with SHA-256 and the given label (which binds the ciphertext)."""
    algorithm = getattr(hashes, OAEP_HASH)()
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=label)


def _spki(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_rsa_public(der: bytes, what: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        raise IdentityError(f"{what} is not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != RSA_BITS:
        raise IdentityError(f"{what} must be an RSA-{RSA_BITS} key")
    return key


@dataclass(frozen=True)
class PublicIdentity:
    """What everyone may know of a user: both public keys and the binding signature.

    Build one with L{from_wire}, which refuses keys of the wrong kind or size
    and a subkey the identity key did not sign.
    """

    sign_der: bytes
    enc_der: bytes
    enc_signature: bytes = field(compare=False)
    sign_key: rsa.RSAPublicKey = field(compare=False, repr=False)
    enc_key: rsa.RSAPublicKey = field(compare=False, repr=False)

    @classmethod
    def from_wire(cls, sign_der: bytes, enc_der: bytes, enc_signature: bytes) -> "PublicIdentity":
        identity = cls(
            sign_der,
            enc_der,
            enc_signature,
            _load_rsa_public(sign_der, "identity key"),
            _load_rsa_public(enc_der, "encryption subkey"),
        )
        if not identity.verify(enc_signature, ctx.SUBKEY, enc_der):
            raise IdentityError("the encryption subkey is not signed by the identity key")
        return identity

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the identity key's DER SubjectPublicKeyInfo."""
        return hashlib.sha256(self.sign_der).digest()

    def verify(self, signature: bytes, context: bytes, *fields) -> bool:
        """Whether C{signature} is this identity's PSS signature of the transcript."""
        try:
            self.sign_key.verify(signature, ctx.transcript(context, *fields), _pss(), _hash())
        except InvalidSignature:
            return False
        return True

    def encrypt(self, plaintext: bytes, label: bytes) -> bytes:
        """RSA-OAEP to the encryption subkey, bound to C{label}."""
        return self.enc_key.encrypt(plaintext, oaep(label))


class PrivateIdentity:
    """Both private keys of the local user."""

    def __init__(self, sign_key: rsa.RSAPrivateKey, enc_key: rsa.RSAPrivateKey):
        self.sign_key = sign_key
        self.enc_key = enc_key
        enc_der = _spki(enc_key.public_key())
        self.public = PublicIdentity(
            _spki(sign_key.public_key()),
            enc_der,
            self.sign(ctx.SUBKEY, enc_der),
            sign_key.public_key(),
            enc_key.public_key(),
        )

    @classmethod
    def generate(cls) -> "PrivateIdentity":
        def new():
            return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_BITS)

        return cls(new(), new())

    @property
    def fingerprint(self) -> bytes:
        return self.public.fingerprint

    def sign(self, context: bytes, *fields) -> bytes:
        return self.sign_key.sign(ctx.transcript(context, *fields), _pss(), _hash())

    def decrypt(self, ciphertext: bytes, label: bytes) -> bytes:
        """Undo L{PublicIdentity.encrypt}; raises ValueError on any mismatch."""
        return self.enc_key.decrypt(ciphertext, oaep(label))


def login_signature(identity: PrivateIdentity, server: str, nick: str, nonce: bytes,
                    exporter: bytes) -> bytes:
    """Sign a login: bound to the server, the nick, its nonce and this TLS session."""
    return identity.sign(ctx.AUTH, server, nick, nonce, exporter)


def verify_login(identity: PublicIdentity, signature: bytes, server: str, nick: str,
                 nonce: bytes, exporter: bytes) -> bool:
    return identity.verify(signature, ctx.AUTH, server, nick, nonce, exporter)


def _safety_half(identity: PublicIdentity, stable_id: str) -> str:
    digest = hashlib.sha512(b"\x00\x00" + identity.sign_der + stable_id.encode()).digest()
    for _ in range(SAFETY_NUMBER_ITERATIONS):
        digest = hashlib.sha512(digest + identity.sign_der).digest()
    return "".join(
        f"{int.from_bytes(digest[i:i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def safety_number(a: PublicIdentity, a_nick: str, b: PublicIdentity, b_nick: str) -> str:
    """Signal's 60-digit safety number for a pair: the same whichever side computes it.

    Nicks are compared case-insensitively by the server, so they are folded
    here to keep the number stable.
    """
    halves = sorted([_safety_half(a, a_nick.casefold()), _safety_half(b, b_nick.casefold())])
    return "".join(halves)


def format_safety_number(number: str) -> str:
    """Twelve groups of five digits, as Signal shows them."""
    return " ".join(number[i : i + 5] for i in range(0, len(number), 5))
