"""Benchmark identities, generated once and kept in benchmarks/.cache.

RSA-3072 key generation takes a few hundred milliseconds per key; a run with
hundreds of clients must not spend minutes on it, nor measure it. The cache
holds throwaway keys (unencrypted PEM) that protect nothing.
"""

import multiprocessing
import os

from cryptography.hazmat.primitives import serialization

from securechat.crypto.identity import PrivateIdentity

CACHE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache")


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _generate(_) -> bytes:
    identity = PrivateIdentity.generate()
    return _pem(identity.sign_key) + _pem(identity.enc_key)


def _parse(data: bytes) -> PrivateIdentity:
    marker = b"-----END PRIVATE KEY-----\n"
    first, second = data.split(marker)[:2]
    return PrivateIdentity(serialization.load_pem_private_key(first + marker, None),
                           serialization.load_pem_private_key(second + marker, None))


def load(count: int, cache_dir: str = CACHE_DIR) -> list[PrivateIdentity]:
    """C{count} identities, the same ones every run (generating what is missing)."""
    os.makedirs(cache_dir, exist_ok=True)
    paths = [os.path.join(cache_dir, f"identity-{n}.pem") for n in range(count)]
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        with multiprocessing.Pool() as pool:
            for path, data in zip(missing, pool.map(_generate, missing)):
                with open(path, "wb") as f:
                    f.write(data)
    identities = []
    for path in paths:
        with open(path, "rb") as f:
            identities.append(_parse(f.read()))
    return identities
