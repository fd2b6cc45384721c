# -*- test-case-name: tests.test_client_pins -*-
"""Peers' identities, pinned on first sight (trust on first use).

A later, different key for the same nick is never adopted silently: it is
held aside as a change the user must accept, and until then the client
neither wraps keys for that user nor trusts messages signed by the new key.
"""

from securechat.crypto.identity import PublicIdentity
from securechat.names import fold
from securechat.wire import b64decode, b64encode

# NEW: pinned now. SAME: as pinned. CHANGED: a different key, first noticed
# now. HELD: that different key again, still awaiting the user's decision.
# ALIAS: a key already pinned under another nick (refused: one person, one name).
NEW, SAME, CHANGED, HELD, ALIAS = "new", "same", "changed", "held", "alias"


def _encode(identity: PublicIdentity) -> list[str]:
    return [b64encode(identity.sign_der), b64encode(identity.enc_der),
            b64encode(identity.enc_signature)]


def _decode(fields: list[str]) -> PublicIdentity:
    return PublicIdentity.from_wire(*(b64decode(f) for f in fields))


class PinStore:
    def __init__(self, data: dict | None = None):
        self._pins: dict[str, dict] = dict(data or {})
        self._cache: dict[str, PublicIdentity] = {}
        self._owners: dict[bytes, str] | None = None

    def to_dict(self) -> dict:
        return self._pins

    def observe(self, nick: str, identity: PublicIdentity) -> str:
        """Record what the server says C{nick}'s keys are.

        @return: NEW, SAME, CHANGED, HELD or ALIAS (see above).
        """
        key = fold(nick)
        pin = self._pins.get(key)
        owner = self.nick_of(identity.fingerprint)
        if owner is not None and fold(owner) != key:
            return ALIAS
        if pin is None:
            self._pins[key] = {"nick": nick, "keys": _encode(identity), "verified": False}
            self._owners = None
            return NEW
        if self.pinned(nick).fingerprint == identity.fingerprint:
            pin.pop("changed", None)
            return SAME
        encoded = _encode(identity)
        if pin.get("changed", [None])[0] == encoded[0]:
            return HELD
        pin["changed"] = encoded
        return CHANGED

    def pinned(self, nick: str) -> PublicIdentity | None:
        key = fold(nick)
        pin = self._pins.get(key)
        if pin is None:
            return None
        if key not in self._cache:
            self._cache[key] = _decode(pin["keys"])
        return self._cache[key]

    def nick_of(self, fingerprint: bytes) -> str | None:
        """The nick this key is pinned under, if any."""
        if self._owners is None:
            self._owners = {self.pinned(pin["nick"]).fingerprint: pin["nick"]
                            for pin in self._pins.values()}
        return self._owners.get(fingerprint)

    def changed(self, nick: str) -> PublicIdentity | None:
        """The new key announced for C{nick} and not accepted yet."""
        pin = self._pins.get(fold(nick))
        return _decode(pin["changed"]) if pin and "changed" in pin else None

    def has_change(self, nick: str) -> bool:
        return "changed" in self._pins.get(fold(nick), {})

    def usable(self, nick: str) -> PublicIdentity | None:
        """The pinned identity if nothing about it is in dispute."""
        if self.has_change(nick):
            return None
        return self.pinned(nick)

    def accept_change(self, nick: str) -> bool:
        """Adopt the new key the server announced; it starts unverified."""
        pin = self._pins.get(fold(nick))
        if pin is None or "changed" not in pin:
            return False
        pin["keys"] = pin.pop("changed")
        pin["verified"] = False
        self._cache.pop(fold(nick), None)
        self._owners = None
        return True

    def mark_verified(self, nick: str, fingerprint: bytes) -> bool:
        """Record that the user compared the safety number of C{fingerprint}
        (the pinned key, or a change they thereby accept); @return: whether
        that key is still the one pinned or announced."""
        pin = self._pins.get(fold(nick))
        if pin is None:
            return False
        changed = self.changed(nick)
        if changed is not None and changed.fingerprint == fingerprint:
            self.accept_change(nick)
        elif self.pinned(nick).fingerprint != fingerprint or changed is not None:
            return False
        pin["verified"] = True
        return True

    def verified(self, nick: str) -> bool:
        pin = self._pins.get(fold(nick))
        return bool(pin and pin["verified"] and "changed" not in pin)

    def verified_then_changed(self, nick: str) -> bool:
        """A peer the user verified whose key has since changed: the user must
        decide before anything more is sent where that peer is."""
        pin = self._pins.get(fold(nick))
        return bool(pin and pin["verified"] and "changed" in pin)
