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


def _key(pem: bytes):
    # We made these keys ourselves: the (slow) validity checks add nothing.
    return serialization.load_pem_private_key(pem, None, unsafe_skip_rsa_key_validation=True)


def _parse(data: bytes) -> PrivateIdentity:
    marker = b"-----END PRIVATE KEY-----\n"
    first, second = data.split(marker)[:2]
    return PrivateIdentity(_key(first + marker), _key(second + marker))


def _path(cache_dir: str, index: int) -> str:
    return os.path.join(cache_dir, f"identity-{index}.pem")


def ensure(count: int, cache_dir: str = CACHE_DIR) -> None:
    """Make sure identities 0 to C{count} - 1 exist (generating in parallel)."""
    os.makedirs(cache_dir, exist_ok=True)
    missing = [_path(cache_dir, n) for n in range(count)
               if not os.path.exists(_path(cache_dir, n))]
    if missing:
        # Spawned, not forked: a fork of a threaded process (the test suite's
        # reactor) can inherit a held lock and hang its workers for ever.
        with multiprocessing.get_context("spawn").Pool() as pool:
            for path, data in zip(missing, pool.map(_generate, missing)):
                with open(path, "wb") as f:
                    f.write(data)


def load(indices, cache_dir: str = CACHE_DIR) -> dict[int, PrivateIdentity]:
    """The identities with these indices (see L{ensure}), the same ones every run."""
    loaded = {}
    for index in indices:
        with open(_path(cache_dir, index), "rb") as f:
            loaded[index] = _parse(f.read())
    return loaded
