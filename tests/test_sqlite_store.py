"""Tests for securechat.server.sqlite_store on temporary SQLite files, and the
behaviour every store shares (StoreTests, also run on PostgreSQL)."""

import os
import sqlite3
import stat

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from securechat.server import sqlstore
from securechat.server.sqlite_store import InlineRunner, SQLiteStore
from securechat.server.sqlstore import SCHEMA_VERSION
from securechat.server.store import (
    EpochRow,
    LogConflict,
    LogEffects,
    MessageRow,
    NameTaken,
    RegistrationTokenInvalid,
    StorageFull,
    UserRow,
    WrapRequestRow,
    WrapRow,
)


def user(n):
    return UserRow(0, f"user{n}", b"s%d" % n, b"e%d" % n, b"sig", b"fp%d" % n)


def new_room(store, name, owner, now=1.0):
    """A room with its log's first entry (the store keeps entries as bytes)."""
    return store.create_room(name, owner, now, (b"genesis", b"sig"))


@defer.inlineCallbacks
def append(store, room, effects=None, now=1.0):
    """An entry at the end of the room's log, with what it changes; @return: its index."""
    index = len((yield store.log(room, 0, 10**6)))
    yield store.append_entry(room, index, b"entry %d" % index, b"sig", now,
                             effects or LogEffects())
    return index


def add_epoch(store, room, number, rotator, wraps, now=1.0, record=b"r"):
    """An epoch entry: its row and its wraps (user id to (wrapper id, wrap))."""
    return append(store, room, LogEffects(epoch=EpochRow(room, number, rotator, record, b"s"),
                                          wraps=wraps), now)


@defer.inlineCallbacks
def keyed_room(store, name, owner):
    """A room with its first epoch: messages need one."""
    room = yield new_room(store, name, owner)
    yield add_epoch(store, room, 1, owner, {owner: (owner, b"w")})
    return room


def message(room_id, sender_id, seq, message_id=None, epoch=1):
    return MessageRow(room_id, sender_id, epoch, seq, message_id or b"m%d" % seq, b"tok", b"sig", 1.0)


class StoreTests:
    """What any IStore must do. A TestCase mixing this in provides
    C{open_store()} (another store on the same database,
    not yet loaded, closed after the test) and C{sql(statement)} (run outside
    the store and committed; fire with the rows)."""

    @defer.inlineCallbacks
    def setUp(self):
        self.store = self.open_store()
        self.snapshot = yield self.store.load()

    @defer.inlineCallbacks
    def reopen(self):
        yield self.store.close()
        self.store = self.open_store()
        self.snapshot = yield self.store.load()
        return self.snapshot

    @defer.inlineCallbacks
    def test_schema_version_recorded(self):
        """A new database records the current schema version; a newer one is refused."""
        [(version,)] = yield self.sql("SELECT value FROM meta WHERE key = 'schema_version'")
        self.assertEqual(int(version), SCHEMA_VERSION)
        yield self.sql("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        failure = yield self.assertFailure(self.open_store().load(), RuntimeError)
        self.assertIn("upgrade securechat", str(failure))

    @defer.inlineCallbacks
    def test_expired_messages_purged_and_seq_goes_on(self):
        """purge_messages deletes only messages older than the cut, oldest first, at
        most the limit per call; with all gone, the next message and a reload go on
        from the last seq, never reusing one."""
        owner = yield self.store.add_user(user(1), 1.0, None)
        room = yield keyed_room(self.store, "#lab", owner)
        rows = [MessageRow(room, owner, 1, n, b"m%d" % n, b"tok", b"sig", float(n))
                for n in range(1, 6)]
        yield self.store.append_messages(rows)
        self.assertEqual((yield self.store.purge_messages(room, 4.0, 2)), 2)
        self.assertEqual((yield self.store.purge_messages(room, 4.0, 2)), 1)
        self.assertEqual((yield self.store.purge_messages(room, 4.0, 2)), 0)
        kept = yield self.store.history(room, None, 0, 10)
        self.assertEqual([r.server_seq for r in kept], [4, 5])
        self.assertEqual((yield self.store.purge_messages(room, 100.0, 10)), 2)
        [reloaded] = (yield self.reopen()).rooms
        self.assertEqual(reloaded.last_seq, 5)
        [result] = yield self.store.append_messages([message(room, owner, 9)])
        self.assertEqual(result.server_seq, 6)

    @defer.inlineCallbacks
    def test_usage_adds_up_per_day(self):
        """Stored bytes add up per user and day; days before yesterday are forgotten."""
        first = yield self.store.add_user(user(1), 1.0, None)
        second = yield self.store.add_user(user(2), 1.0, None)
        yield self.store.add_usage(10, {first: 100})
        yield self.store.add_usage(10, {first: 50, second: 7})
        self.assertEqual((yield self.store.usage(10)), {first: 150, second: 7})
        yield self.store.add_usage(12, {first: 1})
        self.assertEqual((yield self.store.usage(10)), {})

    @defer.inlineCallbacks
    def test_prune_idle_users(self):
        """Accounts never in a room and older than the cut go, with what names them;
        one that joined a room, even once, stays, and so does a newer one."""
        yield self.store.add_user(user(1), 1.0, None)
        member = yield self.store.add_user(user(2), 1.0, None)
        newer = yield self.store.add_user(user(3), 100.0, None)
        room = yield new_room(self.store, "#lab", member)
        other = yield self.store.add_user(user(4), 1.0, None)
        yield append(self.store, room, LogEffects(members={other: "member"}))
        yield append(self.store, room, LogEffects(members={other: None}), 2.0)
        self.assertEqual((yield self.store.prune_idle_users(50.0)), ["user1"])
        left = {u.id for u in (yield self.store.load_users())}
        self.assertEqual(left, {member, newer, other})
        self.assertEqual((yield self.reopen()).fingerprints,
                         {b"fp2": member, b"fp3": newer, b"fp4": other})

    @defer.inlineCallbacks
    def test_users_round_trip_and_tokens(self):
        """Users survive a restart; a registration token works exactly once."""
        yield self.store.add_registration_token(b"T", 1.0)
        first = yield self.store.add_user(user(1), 1.0, b"T")
        yield self.assertFailure(self.store.add_user(user(2), 1.0, b"T"), RegistrationTokenInvalid)
        yield self.assertFailure(self.store.add_user(user(3), 1.0, b"unknown"),
                                 RegistrationTokenInvalid)
        [loaded] = (yield self.reopen()).users
        self.assertEqual((loaded.id, loaded.nick, loaded.fingerprint), (first, "user1", b"fp1"))

    @defer.inlineCallbacks
    def test_nick_unique_regardless_of_case(self):
        """Two accounts cannot share a nick that differs only in case."""
        yield self.store.add_user(user(1), 1.0, None)
        clash = UserRow(0, "USER1", b"x", b"y", b"z", b"other")
        yield self.assertFailure(self.store.add_user(clash, 1.0, None), NameTaken)

    @defer.inlineCallbacks
    def test_reset_user_takes_new_keys(self):
        """A reset token works once and only for its user, who gets new keys, loses the
        wraps to the old ones and leaves every room of theirs needing a new key."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        other = yield self.store.add_user(user(2), 1.0, None)
        room = yield keyed_room(self.store, "#a", uid)
        yield self.store.add_registration_token(b"R", 2.0, resets=uid)
        renewed = UserRow(uid, "user1", b"s9", b"e9", b"sig9", b"fp9")
        yield self.assertFailure(self.store.reset_user(UserRow(other, "user2", b"", b"", b"", b""),
                                                       b"R"), RegistrationTokenInvalid)
        yield self.store.reset_user(renewed, b"R")
        yield self.assertFailure(self.store.reset_user(renewed, b"R"), RegistrationTokenInvalid)
        self.assertEqual((yield self.store.wraps_for(uid, room, 0)), [])
        snapshot = yield self.reopen()
        self.assertEqual({row.id: row for row in snapshot.users}[uid], renewed)
        self.assertTrue(snapshot.rooms[0].rekey_required)
        self.assertEqual(snapshot.fingerprints[b"fp1"], uid)
        self.assertEqual(snapshot.fingerprints[b"fp9"], uid)

    @defer.inlineCallbacks
    def test_ban_is_seen_by_load_users(self):
        """An account's server-wide ban is stored and read back, and can be lifted."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        yield self.store.set_user_banned(uid, True)
        [row] = yield self.store.load_users()
        self.assertTrue(row.banned)
        yield self.store.set_user_banned(uid, False)
        [row] = yield self.store.load_users()
        self.assertFalse(row.banned)

    @defer.inlineCallbacks
    def test_data_version_moves_with_another_writer(self):
        """A commit through another connection to the database changes data_version."""
        before = yield self.store.data_version()
        other = self.open_store()
        yield other.load()
        yield other.add_user(user(1), 1.0, None)
        self.assertNotEqual((yield self.store.data_version()), before)

    @defer.inlineCallbacks
    def test_log_and_what_it_mirrors_round_trip(self):
        """A room's log, and the members, bans and columns its entries set, are what
        the next start loads."""
        owner = yield self.store.add_user(user(1), 1.0, None)
        other = yield self.store.add_user(user(2), 1.0, None)
        room_id = yield new_room(self.store, "#Lab", owner)
        yield append(self.store, room_id, LogEffects(members={other: "member"}), 2.0)
        yield append(self.store, room_id, LogEffects(members={other: "op"},
                                                     room={"invite_only": True}))
        yield self.store.update_room(room_id, topic="t", password_hash=b"h")
        [room] = (yield self.reopen()).rooms
        self.assertEqual((room.name, room.topic, room.invite_only, room.password_hash),
                         ("#Lab", "t", True, b"h"))
        self.assertEqual(room.members, {owner: "owner", other: "op"})
        self.assertEqual(room.log, [(b"genesis", b"sig"), (b"entry 1", b"sig"),
                                    (b"entry 2", b"sig")])
        yield append(self.store, room_id, LogEffects(members={other: None}, bans={other: owner},
                                                     room={"rekey_required": True}), 3.0)
        [room] = (yield self.reopen()).rooms
        self.assertEqual((room.members, room.bans), ({owner: "owner"}, {other}))
        self.assertTrue(room.rekey_required)
        yield append(self.store, room_id, LogEffects(bans={other: None}))
        [room] = (yield self.reopen()).rooms
        self.assertEqual(room.bans, set())
        self.assertEqual([i for i, _, _ in (yield self.store.log(room_id, 2, 10))], [2, 3, 4])

    @defer.inlineCallbacks
    def test_log_compare_and_set(self):
        """An index of a room's log can be written once; a second entry there is a
        LogConflict and changes nothing it would have."""
        owner = yield self.store.add_user(user(1), 1.0, None)
        other = yield self.store.add_user(user(2), 1.0, None)
        room_id = yield new_room(self.store, "#lab", owner)
        yield self.assertFailure(self.store.append_entry(
            room_id, 0, b"another genesis", b"sig", 2.0, LogEffects(members={other: "owner"})),
            LogConflict)
        [room] = (yield self.reopen()).rooms
        self.assertEqual((room.members, room.log), ({owner: "owner"}, [(b"genesis", b"sig")]))

    @defer.inlineCallbacks
    def test_room_without_a_log_loads_as_one(self):
        """A room from before the logs (no entries) loads with no log, to be upgraded."""
        owner = yield self.store.add_user(user(1), 1.0, None)
        yield self.store.create_room("#old", owner, 1.0)
        [room] = (yield self.reopen()).rooms
        self.assertIsNone(room.log)

    def test_update_room_refuses_other_columns(self):
        """Only the documented room columns can be updated."""
        self.assertRaises(ValueError, self.store.update_room, 1, name="#x")

    @defer.inlineCallbacks
    def test_room_name_taken(self):
        """A second room whose name differs only in case is NameTaken."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield new_room(self.store, "#Lab", uid)
        yield self.assertFailure(new_room(self.store, "#lab", uid), NameTaken)
        self.assertEqual((yield self.store.room_id("#LAB")), room)
        self.assertIsNone((yield self.store.room_id("#other")))

    @defer.inlineCallbacks
    def test_load_one_room_and_one_user(self):
        """One room and one account read back as a full load shows them; a
        deleted room reads back as None."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        other = yield self.store.add_user(user(2), 1.0, None)
        room = yield keyed_room(self.store, "#a", uid)
        yield append(self.store, room, LogEffects(members={other: "member"}), 2.0)
        yield self.store.put_wrap_request(WrapRequestRow(room, other, 1, 3.0))
        yield self.store.append_messages([message(room, uid, 1), message(room, uid, 2)])
        loaded, requests = yield self.store.load_room(room)
        [full] = (yield self.reopen()).rooms
        self.assertEqual(loaded, full)
        self.assertEqual((loaded.members, loaded.holders, loaded.last_seq, loaded.epoch_messages),
                         ({uid: "owner", other: "member"}, {uid}, 2, 2))
        self.assertEqual(requests, [WrapRequestRow(room, other, 1, 3.0)])
        self.assertEqual((yield self.store.load_user(other)).nick, "user2")
        yield self.store.delete_room(room)
        self.assertEqual((yield self.store.load_room(room)), (None, []))

    @defer.inlineCallbacks
    def test_append_assigns_per_room_sequence(self):
        """Each room's server_seq counts from 1 without gaps, across batches."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        a = yield keyed_room(self.store, "#a", uid)
        b = yield keyed_room(self.store, "#b", uid)
        results = yield self.store.append_messages(
            [message(a, uid, 1), message(b, uid, 1), message(a, uid, 2)]
        )
        self.assertEqual([(r.outcome, r.server_seq) for r in results],
                         [("stored", 1), ("stored", 1), ("stored", 2)])
        [result] = yield self.store.append_messages([message(a, uid, 3)])
        self.assertEqual(result.server_seq, 3)

    @defer.inlineCallbacks
    def test_duplicates_and_reused_seq(self):
        """A retried message returns its original seq; another message on a used seq is flagged."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield keyed_room(self.store, "#a", uid)
        results = yield self.store.append_messages(
            [message(room, uid, 1), message(room, uid, 1), message(room, uid, 1, b"other")]
        )
        self.assertEqual([(r.outcome, r.server_seq) for r in results],
                         [("stored", 1), ("duplicate", 1), ("seq_reused", 1)])
        self.assertEqual(len((yield self.store.history(room, None, 0, 10))), 1)

    @defer.inlineCallbacks
    def test_append_to_deleted_room_is_gone(self):
        """A message for a room deleted meanwhile is "gone"; the rest of its batch is stored."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        kept = yield keyed_room(self.store, "#a", uid)
        deleted = yield keyed_room(self.store, "#b", uid)
        yield self.store.delete_room(deleted)
        results = yield self.store.append_messages([message(deleted, uid, 1), message(kept, uid, 1)])
        self.assertEqual([(r.outcome, r.server_seq) for r in results],
                         [("gone", 0), ("stored", 1)])

    @defer.inlineCallbacks
    def test_history_pages(self):
        """History pages before or after a seq, oldest first, within the limit."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield keyed_room(self.store, "#a", uid)
        yield self.store.append_messages([message(room, uid, n) for n in range(1, 11)])
        after = yield self.store.history(room, None, 3, 4)
        self.assertEqual([r.server_seq for r in after], [4, 5, 6, 7])
        before = yield self.store.history(room, 8, None, 3)
        self.assertEqual([r.server_seq for r in before], [5, 6, 7])
        latest = yield self.store.history(room, None, None, 2)
        self.assertEqual([r.server_seq for r in latest], [9, 10])
        self.assertEqual(latest[-1], MessageRow(room, uid, 1, 10, b"m10", b"tok", b"sig", 1.0, 10))
        self.assertEqual((yield self.reopen()).rooms[0].last_seq, 10)

    @defer.inlineCallbacks
    def test_epoch_is_stored_with_its_wraps_or_not_at_all(self):
        """An epoch entry stores its row and every wrap in one go; a second one for the
        same epoch is a LogConflict and stores none of its wraps."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        other = yield self.store.add_user(user(2), 1.0, None)
        room = yield new_room(self.store, "#a", uid)
        yield add_epoch(self.store, room, 1, uid, {uid: (uid, b"w")}, 5.0, b"record")
        yield self.assertFailure(add_epoch(self.store, room, 1, uid, {other: (uid, b"w2")}, 6.0),
                                 LogConflict)
        self.assertEqual((yield self.store.wraps_for(other, room, 0)), [])
        self.assertEqual((yield self.store.epochs(room, 1)),
                         [EpochRow(room, 1, uid, b"record", b"s")])
        [loaded] = (yield self.reopen()).rooms
        self.assertEqual((loaded.epoch, loaded.epoch_record, loaded.holders), (1, b"record", {uid}))
        self.assertEqual(len(loaded.log), 2)

    @defer.inlineCallbacks
    def test_current_epoch_counts_its_messages(self):
        """A start loads the newest epoch with its creation time and its message count."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield new_room(self.store, "#a", uid)
        yield add_epoch(self.store, room, 1, uid, {uid: (uid, b"w")}, 1.0, b"r1")
        yield add_epoch(self.store, room, 2, uid, {}, 2.0, b"r2")
        yield self.store.append_messages(
            [message(room, uid, 1), message(room, uid, 2, epoch=2), message(room, uid, 3, epoch=2)]
        )
        [loaded] = (yield self.reopen()).rooms
        self.assertEqual((loaded.epoch, loaded.epoch_record, loaded.epoch_created,
                          loaded.epoch_messages, loaded.holders), (2, b"r2", 2.0, 2, set()))

    @defer.inlineCallbacks
    def test_wrap_requests_survive_and_resolve(self):
        """Wrap requests survive a restart and are resolved by a matching wrap."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        other = yield self.store.add_user(user(2), 1.0, None)
        room = yield new_room(self.store, "#a", uid)
        yield add_epoch(self.store, room, 1, uid, {})
        yield self.store.put_wrap_request(WrapRequestRow(room, other, 1, 2.0))
        withheld = WrapRequestRow(room, other, 1, 3.0, uid, "NO", "not now")
        yield self.store.put_wrap_request(withheld)
        self.assertEqual((yield self.reopen()).wrap_requests, [withheld])
        yield self.store.add_wrap(WrapRow(room, 1, other, uid, b"w"))
        self.assertEqual((yield self.reopen()).wrap_requests, [])
        [wrap] = yield self.store.wraps_for(other, room, 1)
        self.assertEqual((wrap.wrapper_id, wrap.wrap), (uid, b"w"))

    @defer.inlineCallbacks
    def test_delete_wrap_request(self):
        """A dropped wrap request does not come back at the next start."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield new_room(self.store, "#a", uid)
        yield self.store.put_wrap_request(WrapRequestRow(room, uid, 1, 2.0))
        yield self.store.delete_wrap_request(room, uid)
        self.assertEqual((yield self.reopen()).wrap_requests, [])

    @defer.inlineCallbacks
    def test_delete_room_removes_everything(self):
        """Deleting a room deletes its members, epochs, wraps and messages."""
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield keyed_room(self.store, "#a", uid)
        yield self.store.append_messages([message(room, uid, 1)])
        yield self.store.delete_room(room)
        for table in ["rooms", "members", "epochs", "wraps", "messages", "room_log"]:
            self.assertEqual((yield self.sql(f"SELECT COUNT(*) FROM {table}")), [(0,)])

    @defer.inlineCallbacks
    def test_delete_room_purges_messages_in_batches(self):
        """A room with more messages than a purge batch loses them over several
        transactions, oldest first, and then is gone with all of them; other
        rooms keep theirs."""
        self.patch(sqlstore, "ROOM_PURGE_BATCH", 2)
        uid = yield self.store.add_user(user(1), 1.0, None)
        room = yield keyed_room(self.store, "#a", uid)
        other = yield keyed_room(self.store, "#b", uid)
        yield self.store.append_messages([message(room, uid, n) for n in range(1, 6)]
                                         + [message(other, uid, 1)])
        transactions, run = [], self.store._run

        def counted(interaction, *args):
            transactions.append(interaction)
            return run(interaction, *args)

        self.patch(self.store, "_run", counted)
        yield self.store.delete_room(room)
        self.assertEqual(len(transactions), 5)  # 2 + 2 + 1 messages, none left, the room
        self.assertEqual((yield self.sql("SELECT room_id, COUNT(*) FROM messages GROUP BY room_id")),
                         [(other, 1)])
        self.assertEqual((yield self.sql("SELECT id FROM rooms")), [(other,)])


class SQLiteStoreTests(StoreTests, TestCase):

    def open_store(self):
        if not hasattr(self, "path"):
            self.path = self.mktemp()
        store = SQLiteStore(InlineRunner(self.path))
        self.addCleanup(store.close)
        return store

    def sql(self, statement):
        with sqlite3.connect(self.path) as connection:
            rows = connection.execute(statement).fetchall()
        connection.close()
        return defer.succeed(rows)

    @defer.inlineCallbacks
    def test_full_disk_is_storage_full(self):
        """SQLite's "database or disk is full" (what ENOSPC becomes) fails the write as
        StorageFull and keeps nothing of it; the same write works once there is room."""
        owner = yield self.store.add_user(user(1), 1.0, None)
        room = yield keyed_room(self.store, "#lab", owner)
        connection = self.store._runner.connection
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")
        big = MessageRow(room, owner, 1, 1, b"m1", b"t" * 100_000, b"sig", 1.0)
        yield self.assertFailure(self.store.append_messages([big]), StorageFull)
        self.assertEqual((yield self.sql("SELECT COUNT(*) FROM messages")), [(0,)])
        connection.execute("PRAGMA max_page_count = 1073741823")
        [result] = yield self.store.append_messages([big])
        self.assertEqual(result.outcome, "stored")

    def test_durability_pragmas_and_mode(self):
        """The database runs in WAL mode with synchronous=FULL and foreign keys, owner-only."""
        connection = self.store._runner.connection
        self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(connection.execute("PRAGMA synchronous").fetchone()[0], 2)
        self.assertEqual(connection.execute("PRAGMA foreign_keys").fetchone()[0], 1)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
