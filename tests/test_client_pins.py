"""Tests for securechat.client.pins: trust on first use."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.client.pins import ALIAS, CHANGED, NEW, SAME, PinStore
from tests.identities import identity


class PinStoreTests(SynchronousTestCase):
    def test_first_sight_pins(self):
        """The first key seen for a nick is pinned; the same key again is SAME."""
        pins = PinStore()
        self.assertEqual(pins.observe("Bob", identity("bob").public), NEW)
        self.assertEqual(pins.observe("bob", identity("bob").public), SAME)
        self.assertEqual(pins.usable("BOB"), identity("bob").public)

    def test_change_is_held_until_accepted(self):
        """A different key is not adopted: the pin is in doubt until the user accepts it."""
        pins = PinStore()
        pins.observe("bob", identity("bob").public)
        self.assertEqual(pins.observe("bob", identity("mallory").public), CHANGED)
        self.assertIsNone(pins.usable("bob"))
        self.assertEqual(pins.pinned("bob"), identity("bob").public)
        self.assertTrue(pins.accept_change("bob"))
        self.assertEqual(pins.usable("bob"), identity("mallory").public)
        self.assertFalse(pins.verified("bob"))

    def test_verification_and_persistence(self):
        """Verified marks survive a save, and a change voids verification."""
        pins = PinStore()
        pins.observe("bob", identity("bob").public)
        self.assertTrue(pins.mark_verified("bob", identity("bob").fingerprint))
        restored = PinStore(pins.to_dict())
        self.assertTrue(restored.verified("bob"))
        restored.observe("bob", identity("mallory").public)
        self.assertFalse(restored.verified("bob"))
        self.assertTrue(restored.verified_then_changed("bob"))

    def test_verifying_a_key_no_longer_shown_fails(self):
        """Confirming the number of a key that is not (or no longer) bob's marks nothing;
        confirming the announced new key accepts it, verified."""
        pins = PinStore()
        pins.observe("bob", identity("bob").public)
        self.assertFalse(pins.mark_verified("bob", identity("mallory").fingerprint))
        pins.observe("bob", identity("mallory").public)
        self.assertTrue(pins.mark_verified("bob", identity("mallory").fingerprint))
        self.assertEqual(pins.usable("bob"), identity("mallory").public)
        self.assertTrue(pins.verified("bob"))

    def test_one_key_under_two_nicks_is_refused(self):
        """A key pinned for bob, offered under the nick robert, is an alias: refused."""
        pins = PinStore()
        pins.observe("bob", identity("bob").public)
        self.assertEqual(pins.observe("robert", identity("bob").public), ALIAS)
        self.assertIsNone(pins.pinned("robert"))
