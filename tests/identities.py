"""Test identities, generated once per test run: RSA-3072 key generation is
slow enough that every test making its own would dominate the suite."""

from securechat.crypto.identity import PrivateIdentity

_cache: dict[str, PrivateIdentity] = {}


def identity(name: str) -> PrivateIdentity:
    """The test identity called C{name}; the same object every time."""
    if name not in _cache:
        _cache[name] = PrivateIdentity.generate()
    return _cache[name]
