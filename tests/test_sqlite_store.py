"""Tests for securechat.server.sqlite_store on temporary SQLite files."""

import os
import sqlite3
import stat

from twisted.trial.unittest import SynchronousTestCase

from securechat.server.sqlite_store import SCHEMA_VERSION, InlineRunner, SQLiteStore
from securechat.server.store import (
    EpochConflict,
    EpochRow,
    MessageRow,
    RegistrationTokenInvalid,
    UserRow,
    WrapRequestRow,
    WrapRow,
)


def user(n):
    return UserRow(0, f"user{n}", b"s%d" % n, b"e%d" % n, b"sig", b"fp%d" % n)


def message(room_id, sender_id, seq, message_id=None, epoch=1):
    return MessageRow(room_id, sender_id, epoch, seq, message_id or b"m%d" % seq, b"tok", b"sig", 1.0)


class StoreTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.store = self.open()

    def open(self):
        store = SQLiteStore(InlineRunner(self.path))
        self.addCleanup(store.close)
        self.snapshot = self.successResultOf(store.load())
        return store

    def reopen(self):
        self.store.close()
        self.store = self.open()
        return self.snapshot

    def test_durability_pragmas_and_mode(self):
        """The database runs in WAL mode with synchronous=FULL and foreign keys, owner-only."""
        connection = self.store._runner.connection
        self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(connection.execute("PRAGMA synchronous").fetchone()[0], 2)
        self.assertEqual(connection.execute("PRAGMA foreign_keys").fetchone()[0], 1)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_schema_version_recorded(self):
        """A new database records the current schema version; a newer one is refused."""
        connection = self.store._runner.connection
        version = connection.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        self.assertEqual(int(version[0]), SCHEMA_VERSION)
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        connection.commit()
        store = SQLiteStore(InlineRunner(self.path))
        self.addCleanup(store.close)
        failure = self.failureResultOf(store.load(), RuntimeError)
        self.assertIn("upgrade securechat", str(failure.value))

    def test_users_round_trip_and_tokens(self):
        """Users survive a restart; a registration token works exactly once."""
        self.successResultOf(self.store.add_registration_token(b"T", 1.0))
        first = self.successResultOf(self.store.add_user(user(1), 1.0, b"T"))
        self.failureResultOf(self.store.add_user(user(2), 1.0, b"T"), RegistrationTokenInvalid)
        self.failureResultOf(self.store.add_user(user(3), 1.0, b"unknown"), RegistrationTokenInvalid)
        [loaded] = self.reopen().users
        self.assertEqual((loaded.id, loaded.nick, loaded.fingerprint), (first, "user1", b"fp1"))

    def test_nick_unique_regardless_of_case(self):
        """Two accounts cannot share a nick that differs only in case."""
        self.successResultOf(self.store.add_user(user(1), 1.0, None))
        clash = UserRow(0, "USER1", b"x", b"y", b"z", b"other")
        self.failureResultOf(self.store.add_user(clash, 1.0, None), sqlite3.IntegrityError)

    def test_rooms_members_bans_invites_round_trip(self):
        """Room state written through the store is what the next start loads."""
        owner = self.successResultOf(self.store.add_user(user(1), 1.0, None))
        other = self.successResultOf(self.store.add_user(user(2), 1.0, None))
        room_id = self.successResultOf(self.store.create_room("#Lab", owner, 1.0))
        self.successResultOf(self.store.add_invite(room_id, other, owner, b"inv", 1.0))
        self.successResultOf(self.store.add_member(room_id, other, "member", 2.0))
        self.successResultOf(self.store.update_room(room_id, topic="t", invite_only=True))
        self.successResultOf(self.store.set_role(room_id, other, "op"))
        [room] = self.reopen().rooms
        self.assertEqual((room.name, room.topic, room.invite_only), ("#Lab", "t", True))
        self.assertEqual(room.members, {owner: "owner", other: "op"})
        self.assertEqual(room.invites, {other: (owner, b"inv")})
        self.successResultOf(self.store.remove_member(room_id, other, owner, 3.0))
        [room] = self.reopen().rooms
        self.assertEqual((room.members, room.bans, room.invites), ({owner: "owner"}, {other}, {}))
        self.assertTrue(room.rekey_required)

    def test_update_room_refuses_other_columns(self):
        """Only the documented room columns can be updated."""
        self.assertRaises(ValueError, self.store.update_room, 1, name="#x")

    def test_append_assigns_per_room_sequence(self):
        """Each room's server_seq counts from 1 without gaps, across batches."""
        uid = self.successResultOf(self.store.add_user(user(1), 1.0, None))
        a = self.successResultOf(self.store.create_room("#a", uid, 1.0))
        b = self.successResultOf(self.store.create_room("#b", uid, 1.0))
        results = self.successResultOf(
            self.store.append_messages([message(a, uid, 1), message(b, uid, 1), message(a, uid, 2)])
        )
        self.assertEqual([(r.outcome, r.server_seq) for r in results],
                         [("stored", 1), ("stored", 1), ("stored", 2)])
        [result] = self.successResultOf(self.store.append_messages([message(a, uid, 3)]))
        self.assertEqual(result.server_seq, 3)

    def test_duplicates_and_reused_seq(self):
        """A retried message returns its original seq; another message on a used seq is flagged."""
        uid = self.successResultOf(self.store.add_user(user(1), 1.0, None))
        room = self.successResultOf(self.store.create_room("#a", uid, 1.0))
        results = self.successResultOf(self.store.append_messages(
            [message(room, uid, 1), message(room, uid, 1), message(room, uid, 1, b"other")]
        ))
        self.assertEqual([(r.outcome, r.server_seq) for r in results],
                         [("stored", 1), ("duplicate", 1), ("seq_reused", 1)])
        self.assertEqual(len(self.successResultOf(self.store.history(room, None, 0, 10))), 1)

    def test_history_pages(self):
        """History pages before or after a seq, oldest first, within the limit."""
        uid = self.successResultOf(self.store.add_user(user(1), 1.0, None))
        room = self.successResultOf(self.store.create_room("#a", uid, 1.0))
        self.successResultOf(self.store.append_messages([message(room, uid, n) for n in range(1, 11)]))
        after = self.successResultOf(self.store.history(room, None, 3, 4))
        self.assertEqual([r.server_seq for r in after], [4, 5, 6, 7])
        before = self.successResultOf(self.store.history(room, 8, None, 3))
        self.assertEqual([r.server_seq for r in before], [5, 6, 7])
        latest = self.successResultOf(self.store.history(room, None, None, 2))
        self.assertEqual([r.server_seq for r in latest], [9, 10])
        self.assertEqual(self.reopen().rooms[0].last_seq, 10)

    def test_epoch_compare_and_set(self):
        """An epoch can be inserted once; the second insert is an EpochConflict and
        stores none of its wraps."""
        uid = self.successResultOf(self.store.add_user(user(1), 1.0, None))
        other = self.successResultOf(self.store.add_user(user(2), 1.0, None))
        room = self.successResultOf(self.store.create_room("#a", uid, 1.0))
        row = EpochRow(room, 1, uid, b"record", b"sig")
        self.successResultOf(self.store.add_epoch(row, {uid: (uid, b"w")}, 5.0))
        self.failureResultOf(self.store.add_epoch(row, {other: (uid, b"w2")}, 6.0), EpochConflict)
        self.assertEqual(self.successResultOf(self.store.wraps_for(other, room, 0)), [])
        [loaded] = self.reopen().rooms
        self.assertEqual((loaded.epoch, loaded.epoch_record, loaded.holders), (1, b"record", {uid}))

    def test_wrap_requests_survive_and_resolve(self):
        """Wrap requests survive a restart and are resolved by a matching wrap."""
        uid = self.successResultOf(self.store.add_user(user(1), 1.0, None))
        other = self.successResultOf(self.store.add_user(user(2), 1.0, None))
        room = self.successResultOf(self.store.create_room("#a", uid, 1.0))
        self.successResultOf(self.store.add_epoch(EpochRow(room, 1, uid, b"r", b"s"), {}, 1.0))
        self.successResultOf(self.store.put_wrap_request(WrapRequestRow(room, other, 1, 2.0)))
        [request] = self.reopen().wrap_requests
        self.assertEqual((request.room_id, request.user_id, request.epoch), (room, other, 1))
        self.successResultOf(self.store.add_wrap(WrapRow(room, 1, other, uid, b"w")))
        self.assertEqual(self.reopen().wrap_requests, [])
        [wrap] = self.successResultOf(self.store.wraps_for(other, room, 1))
        self.assertEqual((wrap.wrapper_id, wrap.wrap), (uid, b"w"))

    def test_delete_room_removes_everything(self):
        """Deleting a room deletes its members, epochs, wraps and messages."""
        uid = self.successResultOf(self.store.add_user(user(1), 1.0, None))
        room = self.successResultOf(self.store.create_room("#a", uid, 1.0))
        self.successResultOf(self.store.add_epoch(EpochRow(room, 1, uid, b"r", b"s"), {uid: (uid, b"w")}, 1.0))
        self.successResultOf(self.store.append_messages([message(room, uid, 1)]))
        self.successResultOf(self.store.delete_room(room))
        connection = self.store._runner.connection
        for table in ["rooms", "members", "epochs", "wraps", "messages"]:
            self.assertEqual(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0], 0)
