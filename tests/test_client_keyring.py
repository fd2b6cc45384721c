"""Tests for securechat.client.keyring: keys kept only when their record vouches."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.client.keyring import RoomKeyring
from securechat.crypto.roomkeys import RoomKeyError, new_epoch
from tests.identities import identity


def epoch(number, previous=None, previous_key=None, history="joined", members=("alice", "bob")):
    return new_epoch(identity("alice"), "#lab", number, previous, previous_key,
                     [identity(m).public for m in members], "t", history, 1)


class KeyringTests(SynchronousTestCase):
    def test_key_waits_for_its_record(self):
        """A wrap that arrives before its record is held, and usable once the record checks."""
        keyring = RoomKeyring()
        key, record, signature, wraps = epoch(1)
        self.assertFalse(keyring.add_wrap(identity("bob"), "#lab", 1, wraps[identity("bob").fingerprint]))
        self.assertIsNone(keyring.key("#lab", 1))
        keyring.add_record("#lab", 1, record.encode(), signature, "alice", identity("alice").public)
        self.assertEqual(keyring.key("#LAB", 1), key)

    def test_records_must_chain(self):
        """A record whose previous hash is not the known previous record is refused."""
        keyring = RoomKeyring()
        _, first, first_signature, _ = epoch(1)
        keyring.add_record("#lab", 1, first.encode(), first_signature, "alice", identity("alice").public)
        _, unchained, signature, _ = epoch(2)
        self.assertRaises(RoomKeyError, keyring.add_record, "#lab", 2, unchained.encode(),
                          signature, "alice", identity("alice").public)

    def test_record_signed_by_someone_else(self):
        """A record that does not verify with the named rotator's key is refused."""
        _, record, signature, _ = epoch(1)
        self.assertRaises(RoomKeyError, RoomKeyring().add_record, "#lab", 1, record.encode(),
                          signature, "bob", identity("bob").public)

    def test_shared_history_unlocks_backwards(self):
        """In a shared room the newest key unlocks the older epochs through the chain."""
        old_key, first, s1, _ = epoch(1, history="shared")
        new_key, second, s2, wraps = epoch(2, first, old_key, "shared")
        keyring = RoomKeyring()
        keyring.add_record("#lab", 1, first.encode(), s1, "alice", identity("alice").public)
        keyring.add_record("#lab", 2, second.encode(), s2, "alice", identity("alice").public)
        keyring.add_wrap(identity("bob"), "#lab", 2, wraps[identity("bob").fingerprint])
        self.assertEqual(keyring.key("#lab", 1), old_key)

    def test_persistence(self):
        """Keys and records survive a save and load."""
        key, record, signature, wraps = epoch(1)
        keyring = RoomKeyring()
        keyring.add_record("#lab", 1, record.encode(), signature, "alice", identity("alice").public)
        keyring.add_wrap(identity("bob"), "#lab", 1, wraps[identity("bob").fingerprint])
        restored = RoomKeyring(keyring.to_dict())
        self.assertEqual(restored.key("#lab", 1), key)
        self.assertEqual(restored.record("#lab", 1).record, record)
