"""Tests for securechat.client.keyring: keys kept only when a checked entry
(or, before the room logs, a signed record) commits to them."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.client.keyring import Commitment, RoomKeyring
from securechat.crypto.roomkeys import RoomKeyError, key_id, new_epoch, new_room_key
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
        keyring.add_record("#lab", 1, record.encode(), signature, identity("alice").public)
        self.assertEqual(keyring.key("#LAB", 1), key)

    def test_record_of_another_room_refused(self):
        """A record presented for another room or epoch than its own is refused."""
        _, record, signature, _ = epoch(1)
        self.assertRaises(RoomKeyError, RoomKeyring().add_record, "#ops", 1, record.encode(),
                          signature, identity("alice").public)
        self.assertRaises(RoomKeyError, RoomKeyring().add_record, "#lab", 2, record.encode(),
                          signature, identity("alice").public)

    def test_two_commitments_for_one_epoch_refused(self):
        """A second, different commitment for an epoch is refused: two views of a room."""
        keyring = RoomKeyring()
        keyring.commit(Commitment("#lab", 1, b"a" * 16))
        keyring.commit(Commitment("#lab", 1, b"a" * 16))
        self.assertRaises(RoomKeyError, keyring.commit, Commitment("#lab", 1, b"b" * 16))

    def test_own_key_waits_for_its_entry(self):
        """A key we made is usable once its entry commits to it, and only if it matches."""
        keyring = RoomKeyring()
        key = new_room_key()
        keyring.add_own_key("#lab", 1, key)
        self.assertIsNone(keyring.key("#lab", 1))
        keyring.commit(Commitment("#lab", 1, key_id(key, "#lab", 1)))
        self.assertEqual(keyring.key("#lab", 1), key)

    def test_record_signed_by_someone_else(self):
        """A record that does not verify with the named rotator's key is refused."""
        _, record, signature, _ = epoch(1)
        self.assertRaises(RoomKeyError, RoomKeyring().add_record, "#lab", 1, record.encode(),
                          signature, identity("bob").public)

    def test_shared_history_unlocks_backwards(self):
        """In a shared room the newest key unlocks the older epochs through the chain."""
        old_key, first, s1, _ = epoch(1, history="shared")
        new_key, second, s2, wraps = epoch(2, first, old_key, "shared")
        keyring = RoomKeyring()
        keyring.add_record("#lab", 1, first.encode(), s1, identity("alice").public)
        keyring.add_record("#lab", 2, second.encode(), s2, identity("alice").public)
        keyring.add_wrap(identity("bob"), "#lab", 2, wraps[identity("bob").fingerprint])
        self.assertEqual(keyring.key("#lab", 1), old_key)

    def test_persistence(self):
        """Keys and records survive a save and load."""
        key, record, signature, wraps = epoch(1)
        keyring = RoomKeyring()
        keyring.add_record("#lab", 1, record.encode(), signature, identity("alice").public)
        keyring.add_wrap(identity("bob"), "#lab", 1, wraps[identity("bob").fingerprint])
        restored = RoomKeyring(keyring.to_dict())
        self.assertEqual(restored.key("#lab", 1), key)
        self.assertEqual(restored.commitment("#lab", 1).key_id, record.key_id)

    def test_a_long_shared_chain_unlocks_without_recursion(self):
        """The newest key of a shared room unlocks an epoch 1,500 epochs back."""
        from cryptography.fernet import Fernet

        keyring, keys = RoomKeyring(), [new_room_key() for _ in range(1501)]
        for number, key in enumerate(keys, 1):
            box = Fernet(key).encrypt(keys[number - 2]) if number > 1 else b""
            keyring.commit(Commitment("#lab", number, key_id(key, "#lab", number), box))
        keyring.add_own_key("#lab", 1501, keys[-1])
        self.assertEqual(keyring.key("#lab", 1), keys[0])

