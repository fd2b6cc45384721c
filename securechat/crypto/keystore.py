# -*- test-case-name: tests.test_keystore -*-
"""The on-disk formats of a client's secrets, as pure functions over bytes.

One scrypt derivation from the passphrase yields two independent keys (via
HKDF): the password of the PKCS8-encrypted private keys, and the Fernet key
of the local state (pins, room keys, counters). Reading and writing the
files, atomically and owner-only, is L{securechat.client.home}'s job.
"""

import base64
import json
import os
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from securechat.constants import (
    RSA_BITS,
    SCRYPT_MIN_N,
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    SCRYPT_SALT_BYTES,
)
from securechat.crypto.identity import PrivateIdentity

FORMAT = "securechat-keystore"
VERSION = 1


class KeystoreError(Exception):
    """A keystore that cannot be opened; the text is fit for the user."""


@dataclass(frozen=True)
class KdfParams:
    """scrypt's cost parameters and salt, stored in the keystore's header."""

    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    salt: bytes = b""

    @classmethod
    def fresh(cls, n: int = SCRYPT_N) -> "KdfParams":
        return cls(n=n, salt=os.urandom(SCRYPT_SALT_BYTES))


@dataclass(frozen=True)
class UnlockedKeys:
    """The two keys one passphrase unlocks."""

    pkcs8_password: bytes
    state_key: bytes


def derive(passphrase: str, params: KdfParams) -> UnlockedKeys:
    if params.n < SCRYPT_MIN_N or params.n & (params.n - 1):
        raise KeystoreError(f"keystore asks for scrypt n={params.n}; refusing a weak or odd cost")
    master = Scrypt(salt=params.salt, length=32, n=params.n, r=params.r, p=params.p).derive(
        passphrase.encode("utf-8")
    )

    def expand(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)

    return UnlockedKeys(
        pkcs8_password=base64.urlsafe_b64encode(expand(b"securechat/keystore/pkcs8")),
        state_key=base64.urlsafe_b64encode(expand(b"securechat/keystore/state")),
    )


def seal_identity(identity: PrivateIdentity, passphrase: str,
                  params: KdfParams | None = None) -> tuple[bytes, UnlockedKeys]:
    """Serialise both private keys under the passphrase.

    @return: the keystore file's bytes, and the unlocked keys (so the caller
        can seal its state without a second slow derivation).
    """
    params = params or KdfParams.fresh()
    keys = derive(passphrase, params)
    encryption = serialization.BestAvailableEncryption(keys.pkcs8_password)

    def pem(key):
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode("ascii")

    document = {
        "format": FORMAT,
        "version": VERSION,
        "kdf": {"name": "scrypt", "n": params.n, "r": params.r, "p": params.p,
                "salt": base64.urlsafe_b64encode(params.salt).decode()},
        "identity_key": pem(identity.sign_key),
        "encryption_key": pem(identity.enc_key),
    }
    return json.dumps(document, indent=1).encode(), keys


def open_identity(data: bytes, passphrase: str) -> tuple[PrivateIdentity, UnlockedKeys]:
    """Unlock a keystore file.

    @raise KeystoreError: "wrong passphrase", or what is wrong with the file.
    """
    try:
        document = json.loads(data)
        if document["format"] != FORMAT or document["version"] != VERSION:
            raise KeystoreError("not a securechat keystore of a version this client reads")
        kdf = document["kdf"]
        if kdf["name"] != "scrypt":
            raise KeystoreError(f"unknown key derivation {kdf['name']!r}")
        params = KdfParams(int(kdf["n"]), int(kdf["r"]), int(kdf["p"]),
                           base64.urlsafe_b64decode(kdf["salt"]))
        pems = document["identity_key"].encode(), document["encryption_key"].encode()
    except (ValueError, KeyError, TypeError):
        raise KeystoreError("the keystore file is damaged") from None
    keys = derive(passphrase, params)
    try:
        private = [serialization.load_pem_private_key(p, keys.pkcs8_password) for p in pems]
    except (ValueError, TypeError):
        raise KeystoreError("wrong passphrase") from None
    if not all(isinstance(k, rsa.RSAPrivateKey) and k.key_size == RSA_BITS for k in private):
        raise KeystoreError("the keystore holds keys of the wrong kind")
    return PrivateIdentity(*private), keys


def seal_state(state: dict, keys: UnlockedKeys) -> bytes:
    """Encrypt the client's local state (any JSON-able dict)."""
    return Fernet(keys.state_key).encrypt(json.dumps(state, sort_keys=True).encode())


def open_state(data: bytes, keys: UnlockedKeys) -> dict:
    try:
        return json.loads(Fernet(keys.state_key).decrypt(data))
    except InvalidToken:
        raise KeystoreError("the state file does not belong to this keystore or was altered") from None
    except ValueError:
        raise KeystoreError("the state file is damaged") from None
