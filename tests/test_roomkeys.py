"""Tests for securechat.crypto.roomkeys."""

from twisted.trial.unittest import SynchronousTestCase

from securechat.crypto.roomkeys import (
    GENESIS_HASH,
    EpochRecord,
    RoomKeyError,
    member_set_hash,
    new_epoch,
    new_room_key,
    unwrap_key,
    wrap_key,
)
from tests.identities import identity


def rotate(rotator, members, epoch=1, previous=None, previous_key=None, history="joined"):
    return new_epoch(identity(rotator), "#lab", epoch, previous, previous_key,
                     [identity(m).public for m in members], "test", history, 1000)


class WrapTests(SynchronousTestCase):
    def test_wrap_round_trip(self):
        """A key wrapped to a member unwraps for that member."""
        key = new_room_key()
        wrapped = wrap_key(key, identity("bob").public, "#lab", 3)
        self.assertEqual(unwrap_key(identity("bob"), wrapped, "#lab", 3), key)

    def test_wrap_for_wrong_recipient_room_or_epoch(self):
        """A wrap fails for another recipient, and when replayed to another room or epoch."""
        wrapped = wrap_key(new_room_key(), identity("bob").public, "#lab", 3)
        self.assertRaises(RoomKeyError, unwrap_key, identity("carol"), wrapped, "#lab", 3)
        self.assertRaises(RoomKeyError, unwrap_key, identity("bob"), wrapped, "#ops", 3)
        self.assertRaises(RoomKeyError, unwrap_key, identity("bob"), wrapped, "#lab", 4)


class EpochRecordTests(SynchronousTestCase):
    def test_rotation_wraps_every_member(self):
        """A rotation yields a signed record and a wrap per member that all check out."""
        key, record, signature, wraps = rotate("alice", ["alice", "bob"])
        self.assertTrue(record.verify(signature, identity("alice").public))
        self.assertEqual(record.prev_hash, GENESIS_HASH)
        self.assertEqual(
            record.members,
            member_set_hash([identity("alice").fingerprint, identity("bob").fingerprint]),
        )
        for name in ["alice", "bob"]:
            unwrapped = unwrap_key(identity(name), wraps[identity(name).fingerprint], "#lab", 1)
            record.check_key(unwrapped)
        self.assertEqual(unwrapped, key)

    def test_encode_decode(self):
        """A record survives its canonical encoding, and a re-ordered encoding is refused."""
        _, record, _, _ = rotate("alice", ["alice"])
        self.assertEqual(EpochRecord.decode(record.encode()), record)
        self.assertRaises(RoomKeyError, EpochRecord.decode, record.encode().replace(b",", b", ", 1))
        self.assertRaises(RoomKeyError, EpochRecord.decode, b"{}")

    def test_forged_or_altered_record(self):
        """A record altered after signing, or claimed by another rotator, does not verify."""
        _, record, signature, _ = rotate("alice", ["alice", "bob"])
        self.assertFalse(record.verify(signature, identity("bob").public))
        altered = EpochRecord(**{**record.__dict__, "epoch": 5})
        self.assertFalse(altered.verify(signature, identity("alice").public))

    def test_split_view_detected(self):
        """A member handed a different key than the record commits to detects it."""
        _, record, _, _ = rotate("alice", ["alice", "bob"])
        self.assertRaises(RoomKeyError, record.check_key, new_room_key())

    def test_removed_member_gets_nothing(self):
        """After a rotation without carol, no wrap exists for her and her old key is useless."""
        old_key, first, _, _ = rotate("alice", ["alice", "bob", "carol"])
        new_key, second, _, wraps = rotate("alice", ["alice", "bob"], 2, first, old_key)
        self.assertNotIn(identity("carol").fingerprint, wraps)
        self.assertRaises(RoomKeyError, second.check_key, old_key)
        self.assertEqual(second.prev_hash, first.hash())

    def test_shared_history_chains_keys(self):
        """In a shared room the newest key unlocks the previous one; in a joined room it does not."""
        old_key, first, _, _ = rotate("alice", ["alice"])
        new_key, shared, _, _ = rotate("alice", ["alice", "bob"], 2, first, old_key, "shared")
        self.assertEqual(shared.previous_key(new_key), old_key)
        new_key, joined, _, _ = rotate("alice", ["alice", "bob"], 2, first, old_key)
        self.assertRaises(RoomKeyError, joined.previous_key, new_key)

    def test_rotator_must_be_member(self):
        """A rotation that leaves out the rotator is refused."""
        self.assertRaises(ValueError, rotate, "alice", ["bob"])
