"""Room join passwords and registration tokens: the server keeps only hashes.

A room password is hashed with scrypt and a random salt and compared in
constant time; a registration token has 128 random bits, so a plain SHA-256
suffices for it.
"""

import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from securechat.constants import REGISTRATION_TOKEN_BYTES, ROOM_PASSWORD_SCRYPT_N

_SALT_BYTES = 16
_SCRYPT_R = 8
_SCRYPT_P = 1


def hash_room_password(password: str) -> bytes:
    """salt || scrypt(password): what the rooms table stores."""
    salt = os.urandom(_SALT_BYTES)
    return salt + _derive(password, salt)


def check_room_password(password: str, stored: bytes) -> bool:
    salt, expected = stored[:_SALT_BYTES], stored[_SALT_BYTES:]
    return hmac.compare_digest(_derive(password, salt), expected)


def _derive(password: str, salt: bytes) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=ROOM_PASSWORD_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(password.encode("utf-8"))


def new_registration_token() -> str:
    """A fresh token for an operator to hand out; shown once, never stored."""
    return secrets.token_urlsafe(REGISTRATION_TOKEN_BYTES)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()
