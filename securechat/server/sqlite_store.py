# -*- test-case-name: tests.test_sqlite_store -*-
"""The SQLite store: the default, one file in the data dir.

Every write goes through one connection (SQLite has one writer), in WAL
mode with synchronous=FULL, so a commit survives power loss before the
daemon acknowledges it. In the daemon that connection is a
L{GroupCommitWriter}; reads use a second, read-only connection on a thread
of its own, which sees what has been committed. The schema carries a version
number and is upgraded in place by the migrations below.
"""

import os
import sqlite3

from twisted.enterprise import adbapi
from twisted.internet import defer
from zope.interface import implementer

from securechat.constants import PRIVATE_FILE_MODE
from securechat.server.sqlite_writer import GroupCommitWriter, open_writer
from securechat.server.sqlstore import (
    SCHEMA_VERSION,
    LAST_SEQ,
    SQLStore,
    append_entry,
    append_message,
    mark_joined,
    remember_fingerprint,
    attach_logs,
    select_fingerprints,
    select_log,
    schema_version,
    select_users,
    versions_to_apply,
)
from securechat.server.store import (
    AppendResult,
    IStore,
    LogEffects,
    MessageRow,
    NameTaken,
    RegistrationTokenInvalid,
    RoomRow,
    Snapshot,
    StorageFull,
    UserRow,
    WrapRequestRow,
)

MIGRATIONS = {
    1: """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        nick TEXT NOT NULL,
        folded TEXT NOT NULL UNIQUE,
        sign_key BLOB NOT NULL,
        enc_key BLOB NOT NULL,
        enc_signature BLOB NOT NULL,
        fingerprint BLOB NOT NULL UNIQUE,
        created REAL NOT NULL,
        banned INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE registration_tokens (
        digest BLOB PRIMARY KEY,
        created REAL NOT NULL,
        used_by INTEGER REFERENCES users(id)
    );
    CREATE TABLE rooms (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        folded TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL DEFAULT '',
        invite_only INTEGER NOT NULL DEFAULT 0,
        password_hash BLOB,
        rekey_required INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE TABLE members (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        role TEXT NOT NULL CHECK (role IN ('owner', 'op', 'member')),
        joined REAL NOT NULL,
        PRIMARY KEY (room_id, user_id)
    );
    CREATE INDEX members_by_user ON members(user_id);
    CREATE TABLE bans (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        banned_by INTEGER NOT NULL REFERENCES users(id),
        created REAL NOT NULL,
        PRIMARY KEY (room_id, user_id)
    );
    CREATE TABLE invites (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        inviter_id INTEGER NOT NULL REFERENCES users(id),
        signature BLOB NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (room_id, user_id)
    );
    CREATE TABLE epochs (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        epoch INTEGER NOT NULL,
        rotator_id INTEGER NOT NULL REFERENCES users(id),
        record BLOB NOT NULL,
        signature BLOB NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (room_id, epoch)
    );
    CREATE TABLE wraps (
        room_id INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id),
        wrapper_id INTEGER NOT NULL REFERENCES users(id),
        wrap BLOB NOT NULL,
        PRIMARY KEY (room_id, epoch, user_id),
        FOREIGN KEY (room_id, epoch) REFERENCES epochs(room_id, epoch) ON DELETE CASCADE
    );
    CREATE INDEX wraps_by_user ON wraps(user_id, room_id, epoch);
    CREATE TABLE wrap_requests (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        epoch INTEGER NOT NULL,
        created REAL NOT NULL,
        withheld_by INTEGER REFERENCES users(id),
        withheld_code TEXT,
        withheld_text TEXT,
        PRIMARY KEY (room_id, user_id)
    );
    CREATE TABLE messages (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        server_seq INTEGER NOT NULL,
        sender_id INTEGER NOT NULL REFERENCES users(id),
        epoch INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        message_id BLOB NOT NULL,
        token BLOB NOT NULL,
        signature BLOB NOT NULL,
        received REAL NOT NULL,
        PRIMARY KEY (room_id, server_seq),
        UNIQUE (room_id, sender_id, seq)
    ) WITHOUT ROWID;
    """,
    # Tokens that let a user who lost their keys register the same nick anew.
    2: """
    ALTER TABLE registration_tokens ADD COLUMN resets INTEGER REFERENCES users(id);
    """,
    # Bounded storage: retention per room (and where its expired messages
    # ended), each user's stored bytes per day, and whether an account was
    # ever in a room (an account that never was may be pruned). Accounts from
    # before count as having joined if anything of theirs says so.
    3: """
    ALTER TABLE rooms ADD COLUMN retention_days INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rooms ADD COLUMN purged_through INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE storage_usage (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        day INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (user_id, day)
    );
    ALTER TABLE users ADD COLUMN joined_any INTEGER NOT NULL DEFAULT 0;
    UPDATE users SET joined_any = 1 WHERE id IN (SELECT user_id FROM members)
        OR id IN (SELECT user_id FROM wraps) OR id IN (SELECT rotator_id FROM epochs)
        OR EXISTS (SELECT 1 FROM rooms, messages WHERE messages.room_id = rooms.id
                   AND messages.sender_id = users.id);
    """,
    # The signed room log, and every identity key each user has had (a log
    # names members by the key they had when they joined).
    4: """
    CREATE TABLE room_log (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        entry BLOB NOT NULL,
        signature BLOB NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (room_id, idx)
    ) WITHOUT ROWID;
    CREATE TABLE fingerprints (
        fingerprint BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE
    );
    INSERT INTO fingerprints (fingerprint, user_id) SELECT fingerprint, id FROM users;
    """,
}


def configure_connection(connection) -> None:
    """Per-connection settings: durability first, then integrity."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=5000")


def create_private_file(path: str) -> None:
    """Make sure the database file exists and is owner-only before SQLite opens it;
    SQLite gives its -wal and -shm files the same mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    os.close(fd)


def migrate(txn) -> int:
    """Bring the schema up to SCHEMA_VERSION."""
    for target in versions_to_apply(schema_version(txn)):
        for statement in MIGRATIONS[target].split(";"):
            if statement.strip():
                txn.execute(statement)
        txn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(target),)
        )
    return SCHEMA_VERSION


class InlineRunner:
    """Runs each interaction at once on one connection: for tools and tests
    that have no reactor thread pool. Same contract as adbapi's pool."""

    def __init__(self, path: str):
        if path != ":memory:":
            create_private_file(path)
        self.connection = sqlite3.connect(path)
        configure_connection(self.connection)

    def runInteraction(self, interaction, *args, **kwargs):  # noqa: N802
        cursor = self.connection.cursor()
        try:
            result = interaction(cursor, *args, **kwargs)
        except BaseException:
            self.connection.rollback()
            return defer.fail()
        self.connection.commit()
        return defer.succeed(result)

    def close(self) -> None:
        self.connection.close()


def configure_reader(connection) -> None:
    """The read connection may not write, even by mistake: only the writer's
    commits are acknowledged as durable."""
    connection.execute("PRAGMA query_only=ON")
    connection.execute("PRAGMA busy_timeout=5000")


def open_connections(path: str, reactor=None) -> tuple[GroupCommitWriter,
                                                       adbapi.ConnectionPool]:
    """The daemon's writer and its reader, on the same file."""
    create_private_file(path)
    writer = open_writer(path, configure_connection, reactor)
    reader = adbapi.ConnectionPool("sqlite3", path, check_same_thread=False, cp_min=1,
                                   cp_max=1, cp_openfun=configure_reader, cp_reactor=reactor)
    return writer, reader


def _disk_full(failure):
    """SQLite's "database or disk is full" as the store interface says it."""
    error = failure.value
    if isinstance(error, sqlite3.OperationalError) and \
            getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        raise StorageFull(str(error)) from error
    return failure


def _one_snapshot(txn, interaction, *args):
    """Run a read in one transaction, so that all its statements see the same
    commit: a load reads rooms, then members, then epochs, and a commit
    landing between two of them would show a member of a room it never read."""
    txn.execute("BEGIN")
    try:
        return interaction(txn, *args)
    finally:
        txn.execute("COMMIT")


@implementer(IStore)
class SQLiteStore(SQLStore):
    """@param runner: where writes run (and reads too, if no C{reader}).
    @param reader: where reads run, over a connection of its own."""

    def __init__(self, runner, reader=None):
        self._runner = runner
        self._reader = reader or runner

    def _run(self, interaction, *args, **kwargs):
        return self._runner.runInteraction(interaction, *args, **kwargs).addErrback(_disk_full)

    def _read(self, interaction, *args):
        if self._reader is self._runner:
            return self._runner.runInteraction(interaction, *args)
        return self._reader.runInteraction(_one_snapshot, interaction, *args)

    @defer.inlineCallbacks
    def close(self):
        yield self._runner.close()
        if self._reader is not self._runner:
            yield self._reader.close()

    # -- loading -------------------------------------------------------------

    def load(self):
        """Upgrade the schema (a write), then read everything."""
        return self._run(migrate).addCallback(lambda _: self._read(_load))

    def load_room(self, room_id: int):
        return self._read(_load_room, room_id)

    # -- accounts ------------------------------------------------------------

    def add_user(self, user: UserRow, now: float, token_digest: bytes | None):
        return self._run(_add_user, user, now, token_digest)

    def reset_user(self, user: UserRow, token_digest: bytes):
        return self._run(_reset_user, user, token_digest)

    def data_version(self):
        return self._run(lambda t: t.execute("PRAGMA data_version").fetchone()[0])

    # -- rooms ---------------------------------------------------------------

    def create_room(self, name: str, owner_id: int, now: float,
                    genesis: tuple[bytes, bytes] | None = None):
        return self._run(_create_room, name, owner_id, now, genesis)

    # -- messages ------------------------------------------------------------

    def append_messages(self, rows: list[MessageRow]):
        return self._run(_append_messages, rows)


# -- interactions (run on the database thread) ---------------------------------




def _load_epoch(txn, room: RoomRow, epoch: int) -> None:
    """The room's current epoch: its record, how many messages used it, who holds its key."""
    room.epoch = epoch
    txn.execute(
        "SELECT created, record FROM epochs WHERE room_id = ? AND epoch = ?", (room.id, epoch)
    )
    room.epoch_created, room.epoch_record = txn.fetchone()
    txn.execute(
        "SELECT COUNT(*) FROM messages WHERE room_id = ? AND epoch = ?", (room.id, epoch)
    )
    room.epoch_messages = txn.fetchone()[0]
    txn.execute("SELECT user_id FROM wraps WHERE room_id = ? AND epoch = ?", (room.id, epoch))
    room.holders = {r[0] for r in txn.fetchall()}


_ROOM_SELECT = (
    "SELECT id, name, topic, invite_only, password_hash, rekey_required, created,"
    f" retention_days, {LAST_SEQ} FROM rooms"
)


def _room_row(r) -> RoomRow:
    return RoomRow(r[0], r[1], r[2], bool(r[3]), r[4], bool(r[5]), r[6], retention_days=r[7],
                   last_seq=r[8])


def _load(txn) -> Snapshot:
    users = select_users(txn)
    txn.execute(_ROOM_SELECT)
    rooms = {r[0]: _room_row(r) for r in txn.fetchall()}
    txn.execute("SELECT room_id, user_id, role FROM members")
    for room_id, user_id, role in txn.fetchall():
        rooms[room_id].members[user_id] = role
    txn.execute("SELECT room_id, user_id FROM bans")
    for room_id, user_id in txn.fetchall():
        rooms[room_id].bans.add(user_id)
    txn.execute("SELECT room_id, user_id, inviter_id, signature FROM invites")
    for room_id, user_id, inviter_id, signature in txn.fetchall():
        rooms[room_id].invites[user_id] = (inviter_id, signature)
    txn.execute("SELECT room_id, MAX(epoch) FROM epochs GROUP BY room_id")
    for room_id, epoch in txn.fetchall():
        _load_epoch(txn, rooms[room_id], epoch)
    txn.execute(
        "SELECT room_id, user_id, epoch, created, withheld_by, withheld_code, withheld_text"
        " FROM wrap_requests"
    )
    requests = [WrapRequestRow(*r) for r in txn.fetchall()]
    attach_logs(txn, rooms)
    return Snapshot(users, list(rooms.values()), requests, select_fingerprints(txn))




def _load_room(txn, room_id: int) -> tuple[RoomRow | None, list[WrapRequestRow]]:
    txn.execute(f"{_ROOM_SELECT} WHERE id = ?", (room_id,))
    found = txn.fetchone()
    if found is None:
        return None, []
    room = _room_row(found)
    txn.execute("SELECT user_id, role FROM members WHERE room_id = ?", (room_id,))
    room.members = dict(txn.fetchall())
    txn.execute("SELECT user_id FROM bans WHERE room_id = ?", (room_id,))
    room.bans = {r[0] for r in txn.fetchall()}
    txn.execute("SELECT user_id, inviter_id, signature FROM invites WHERE room_id = ?",
                (room_id,))
    room.invites = {user_id: (inviter, signature) for user_id, inviter, signature in txn.fetchall()}
    txn.execute("SELECT MAX(epoch) FROM epochs WHERE room_id = ?", (room_id,))
    epoch = txn.fetchone()[0]
    if epoch is not None:
        _load_epoch(txn, room, epoch)
    room.log = [(data, signature) for _, data, signature in select_log(txn, room_id)] or None
    txn.execute(
        "SELECT room_id, user_id, epoch, created, withheld_by, withheld_code, withheld_text"
        " FROM wrap_requests WHERE room_id = ?", (room_id,)
    )
    return room, [WrapRequestRow(*r) for r in txn.fetchall()]


def _add_user(txn, user: UserRow, now: float, token_digest: bytes | None) -> int:
    try:
        txn.execute(
            "INSERT INTO users (nick, folded, sign_key, enc_key, enc_signature, fingerprint,"
            " created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user.nick, user.nick.casefold(), user.sign_key, user.enc_key, user.enc_signature,
             user.fingerprint, now),
        )
    except sqlite3.IntegrityError:
        raise NameTaken() from None
    user_id = txn.lastrowid
    remember_fingerprint(txn, user.fingerprint, user_id)
    if token_digest is not None:
        txn.execute(
            "UPDATE registration_tokens SET used_by = ? WHERE digest = ? AND used_by IS NULL",
            (user_id, token_digest),
        )
        if txn.rowcount != 1:
            raise RegistrationTokenInvalid()
    return user_id


def _reset_user(txn, user: UserRow, token_digest: bytes) -> None:
    txn.execute(
        "UPDATE registration_tokens SET used_by = ? WHERE digest = ? AND used_by IS NULL"
        " AND resets = ?", (user.id, token_digest, user.id),
    )
    if txn.rowcount != 1:
        raise RegistrationTokenInvalid()
    txn.execute(
        "UPDATE users SET sign_key = ?, enc_key = ?, enc_signature = ?, fingerprint = ?"
        " WHERE id = ?",
        (user.sign_key, user.enc_key, user.enc_signature, user.fingerprint, user.id),
    )
    remember_fingerprint(txn, user.fingerprint, user.id)
    # Wraps to the lost key are useless to the new one; and whoever holds the
    # lost key must not read what comes next: every room of theirs re-keys.
    txn.execute("DELETE FROM wraps WHERE user_id = ?", (user.id,))
    txn.execute("UPDATE rooms SET rekey_required = 1 WHERE id IN"
                " (SELECT room_id FROM members WHERE user_id = ?)", (user.id,))


def _create_room(txn, name: str, owner_id: int, now: float,
                 genesis: tuple[bytes, bytes] | None) -> int:
    try:
        txn.execute(
            "INSERT INTO rooms (name, folded, created) VALUES (?, ?, ?)",
            (name, name.casefold(), now),
        )
    except sqlite3.IntegrityError:
        raise NameTaken() from None
    room_id = txn.lastrowid
    txn.execute(
        "INSERT INTO members (room_id, user_id, role, joined) VALUES (?, ?, 'owner', ?)",
        (room_id, owner_id, now),
    )
    mark_joined(txn, owner_id)
    if genesis is not None:
        append_entry(txn, room_id, 0, *genesis, now, LogEffects())
    return room_id


def _append_messages(txn, rows: list[MessageRow]) -> list[AppendResult]:
    results = []
    for row in rows:
        try:
            results.append(append_message(txn, row))
        except sqlite3.IntegrityError:
            # The room was deleted since this message was queued; only this row
            # fails (SQLite undoes the statement, not the transaction).
            results.append(AppendResult("gone", 0))
    return results
