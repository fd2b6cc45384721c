# -*- test-case-name: tests.test_sqlite_store,tests.test_postgres_store -*-
"""What the SQLite and PostgreSQL stores do alike, written once.

Most statements are the same in both dialects once the parameter
placeholder is spelled the driver's way (sqlite3 takes ``?``, psycopg2
``%s``); upserts use ``ON CONFLICT ... DO UPDATE``, which both understand.
What differs (schema DDL, appending messages, loading, conflicts, the
connection) stays in each store. Only appending a message is on the hot path.
"""

import functools

from twisted.internet import defer

from securechat.constants import ROOM_PURGE_BATCH
from securechat.server.store import (
    AppendResult,
    EpochRow,
    LogConflict,
    LogEffects,
    MessageRow,
    UserRow,
    WrapRequestRow,
    WrapRow,
)

SCHEMA_VERSION = 4

ROOM_COLUMNS = {"topic", "invite_only", "password_hash", "rekey_required", "retention_days"}

MESSAGE_COLUMNS = (
    "room_id, sender_id, epoch, seq, message_id, token, signature, received, server_seq"
)

# history() with no upper bound: above any server_seq (a signed 64-bit integer).
NEWEST = 2**63 - 1


def check_room_columns(columns) -> None:
    """Refuse an update_room() that names no column or one it may not change."""
    unknown = set(columns) - ROOM_COLUMNS
    if unknown or not columns:
        raise ValueError(f"cannot update room columns {sorted(unknown) or 'none'}")


def schema_version(txn) -> int:
    txn.execute(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
    )
    txn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
    row = txn.fetchone()
    return int(row[0]) if row else 0


def versions_to_apply(version: int) -> range:
    """The migrations a database at C{version} needs; refuse one from the future."""
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database has schema version {version}; this securechat knows up to "
            f"{SCHEMA_VERSION}: upgrade securechat"
        )
    return range(version + 1, SCHEMA_VERSION + 1)


def mark_joined(txn, user_id: int, placeholder: str = "?") -> None:
    """Remember that the user has been in a room: such an account is never
    pruned as one that was created and left unused."""
    txn.execute(respell("UPDATE users SET joined_any = ? WHERE id = ? AND joined_any = ?",
                        placeholder), (True, user_id, False))


def select_fingerprints(txn) -> dict[bytes, int]:
    txn.execute("SELECT fingerprint, user_id FROM fingerprints")
    return {bytes(fp): user_id for fp, user_id in txn.fetchall()}


def remember_fingerprint(txn, fingerprint: bytes, user_id: int, placeholder: str = "?") -> None:
    """A key a user has: rooms' logs may name it even after a reset replaced it."""
    txn.execute(respell("INSERT INTO fingerprints (fingerprint, user_id) VALUES (?, ?)"
                        " ON CONFLICT (fingerprint) DO NOTHING", placeholder),
                (fingerprint, user_id))


def attach_logs(txn, rooms: dict) -> None:
    """Every room's log, in order, onto its row (C{rooms} by id)."""
    txn.execute("SELECT room_id, entry, signature FROM room_log ORDER BY room_id, idx")
    for room_id, data, signature in txn.fetchall():
        room = rooms[room_id]
        if room.log is None:
            room.log = []
        room.log.append((bytes(data), bytes(signature)))


def select_log(txn, room_id: int, from_index: int = 0, limit: int | None = None,
               placeholder: str = "?") -> list[tuple[int, bytes, bytes]]:
    statement = "SELECT idx, entry, signature FROM room_log WHERE room_id = ? AND idx >= ?" \
                " ORDER BY idx"
    params = (room_id, from_index)
    if limit is not None:
        statement += " LIMIT ?"
        params += (limit,)
    txn.execute(respell(statement, placeholder), params)
    return [(idx, bytes(entry), bytes(signature)) for idx, entry, signature in txn.fetchall()]


def append_entry(txn, room_id: int, index: int, data: bytes, signature: bytes, now: float,
                 effects: LogEffects, placeholder: str = "?") -> None:
    """The entry, then what it changes, in the caller's transaction; LogConflict
    if the index is taken (nothing is written then)."""
    def run(statement, params):
        txn.execute(respell(statement, placeholder), params)

    run("INSERT INTO room_log (room_id, idx, entry, signature, created) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (room_id, idx) DO NOTHING", (room_id, index, data, signature, now))
    if txn.rowcount != 1:
        raise LogConflict()
    for user_id, role in effects.members.items():
        run("DELETE FROM members WHERE room_id = ? AND user_id = ?", (room_id, user_id))
        if role is not None:
            run("INSERT INTO members (room_id, user_id, role, joined) VALUES (?, ?, ?, ?)",
                (room_id, user_id, role, now))
            mark_joined(txn, user_id, placeholder)
        else:
            run("DELETE FROM wrap_requests WHERE room_id = ? AND user_id = ?", (room_id, user_id))
    for user_id, by in effects.bans.items():
        run("DELETE FROM bans WHERE room_id = ? AND user_id = ?", (room_id, user_id))
        if by is not None:
            run("INSERT INTO bans (room_id, user_id, banned_by, created) VALUES (?, ?, ?, ?)",
                (room_id, user_id, by, now))
    if effects.room:
        check_room_columns(effects.room)
        assignments = ", ".join(f"{name} = ?" for name in effects.room)
        run(f"UPDATE rooms SET {assignments} WHERE id = ?", (*effects.room.values(), room_id))
    if effects.epoch is not None:
        row = effects.epoch
        run("INSERT INTO epochs (room_id, epoch, rotator_id, record, signature, created)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (room_id, epoch) DO NOTHING",
            (row.room_id, row.epoch, row.rotator_id, row.record, row.signature, now))
        if txn.rowcount != 1:
            raise LogConflict()
        for user_id, (wrapper_id, wrap) in sorted(effects.wraps.items()):
            run("INSERT INTO wraps (room_id, epoch, user_id, wrapper_id, wrap)"
                " VALUES (?, ?, ?, ?, ?)", (row.room_id, row.epoch, user_id, wrapper_id, wrap))
            run("DELETE FROM wrap_requests WHERE room_id = ? AND user_id = ?",
                (row.room_id, user_id))
        run("UPDATE rooms SET rekey_required = ? WHERE id = ?", (False, row.room_id))


def select_users(txn) -> list[UserRow]:
    txn.execute(
        "SELECT id, nick, sign_key, enc_key, enc_signature, fingerprint, banned FROM users"
    )
    return [UserRow(*r[:6], banned=bool(r[6])) for r in txn.fetchall()]


@functools.lru_cache(maxsize=None)
def respell(statement: str, placeholder: str) -> str:
    """A statement written with ``?`` for each parameter, as C{placeholder}'s
    driver spells it; remembered, since appending a message respells per row."""
    return statement if placeholder == "?" else statement.replace("?", placeholder)


# Appending a message, in one statement for the usual case (a new message):
# it takes the room's next server_seq and stores the row, or does nothing
# when the sender's seq is taken. The caller makes sure nobody else appends
# to the room meanwhile (SQLite has one writer; PostgreSQL locks the room).
# A room whose every message expired continues after the last one deleted
# (rooms.purged_through), so that no server_seq is ever handed out twice.
APPEND_MESSAGE = (
    "INSERT INTO messages (room_id, server_seq, sender_id, epoch, seq, message_id, token,"
    " signature, received)"
    " SELECT ?, COALESCE(MAX(server_seq), (SELECT purged_through FROM rooms WHERE id = ?)) + 1,"
    " ?, ?, ?, ?, ?, ?, ? FROM messages WHERE room_id = ?"
    " ON CONFLICT (room_id, sender_id, seq) DO NOTHING RETURNING server_seq"
)

# The newest message of a room, or where its expired ones ended.
LAST_SEQ = ("COALESCE((SELECT MAX(server_seq) FROM messages WHERE room_id = rooms.id),"
            " rooms.purged_through)")


def append_message(txn, row: MessageRow, placeholder: str = "?") -> AppendResult:
    """Run APPEND_MESSAGE for C{row}: stored, or, when its seq was taken, the
    same message stored before (a retry) or another one (a client bug)."""
    txn.execute(respell(APPEND_MESSAGE, placeholder),
                (row.room_id, row.room_id, row.sender_id, row.epoch, row.seq, row.message_id,
                 row.token, row.signature, row.received, row.room_id))
    stored = txn.fetchone()
    if stored is not None:
        return AppendResult("stored", stored[0])
    txn.execute(respell("SELECT server_seq, message_id FROM messages"
                        " WHERE room_id = ? AND sender_id = ? AND seq = ?", placeholder),
                (row.room_id, row.sender_id, row.seq))
    server_seq, message_id = txn.fetchone()
    return AppendResult("duplicate" if message_id == row.message_id else "seq_reused",
                        server_seq)


class SQLStore:
    """The statements both stores share. A subclass provides C{_run(interaction,
    *args)} (one transaction, a Deferred) and, if its driver wants another,
    C{placeholder}. Reads go through C{_read}, which is C{_run} unless the
    subclass reads over a connection of its own."""

    placeholder = "?"

    def _read(self, interaction, *args):
        return self._run(interaction, *args)

    def _sql(self, statement: str) -> str:
        return respell(statement, self.placeholder)

    def _execute(self, statement: str, params=()):
        statement = self._sql(statement)
        return self._run(lambda txn: txn.execute(statement, params))

    def _select(self, statement: str, params, make):
        statement = self._sql(statement)

        def interaction(txn):
            txn.execute(statement, params)
            return [make(*r) for r in txn.fetchall()]

        return self._read(interaction)

    # -- accounts ------------------------------------------------------------

    def load_users(self):
        return self._read(select_users)

    def load_user(self, user_id: int):
        statement = self._sql(
            "SELECT id, nick, sign_key, enc_key, enc_signature, fingerprint, banned FROM users"
            " WHERE id = ?")

        def interaction(txn):
            txn.execute(statement, (user_id,))
            row = txn.fetchone()
            return UserRow(*row[:6], banned=bool(row[6])) if row else None

        return self._read(interaction)

    def add_registration_token(self, digest: bytes, now: float, resets: int | None = None):
        return self._execute(
            "INSERT INTO registration_tokens (digest, created, resets) VALUES (?, ?, ?)",
            (digest, now, resets))

    def prune_idle_users(self, created_before: float):
        """Delete the accounts created before C{created_before} that were never in a
        room, with the invites and bans naming them and the tokens they used; fire
        with their nicks. Such an account has no messages, keys or epochs."""
        idle = self._sql("SELECT id, nick FROM users WHERE joined_any = ? AND created < ?"
                         " ORDER BY folded")
        cleanups = [self._sql(statement) for statement in (
            "DELETE FROM invites WHERE user_id = ? OR inviter_id = ?",
            "DELETE FROM bans WHERE user_id = ? OR banned_by = ?",
            "DELETE FROM registration_tokens WHERE used_by = ? OR resets = ?",
            "DELETE FROM storage_usage WHERE user_id = ? OR user_id = ?",
            "DELETE FROM fingerprints WHERE user_id = ? OR user_id = ?",
            "DELETE FROM users WHERE id = ? AND id = ?",
        )]

        def interaction(txn):
            txn.execute(idle, (False, created_before))
            found = txn.fetchall()
            for user_id, _ in found:
                for statement in cleanups:
                    txn.execute(statement, (user_id, user_id))
            return [nick for _, nick in found]

        return self._run(interaction)

    def set_user_banned(self, user_id: int, banned: bool):
        return self._execute("UPDATE users SET banned = ? WHERE id = ?", (banned, user_id))

    # -- room logs -----------------------------------------------------------

    def log(self, room_id: int, from_index: int, limit: int):
        return self._read(select_log, room_id, from_index, limit, self.placeholder)

    def append_entry(self, room_id: int, index: int, data: bytes, signature: bytes, now: float,
                     effects: LogEffects):
        return self._run(append_entry, room_id, index, data, signature, now, effects,
                         self.placeholder)

    # -- rooms ---------------------------------------------------------------

    def room_id(self, name: str):
        statement = self._sql("SELECT id FROM rooms WHERE folded = ?")

        def interaction(txn):
            txn.execute(statement, (name.casefold(),))
            found = txn.fetchone()
            return found[0] if found else None

        return self._read(interaction)

    def update_room(self, room_id: int, **columns):
        check_room_columns(columns)
        assignments = ", ".join(f"{name} = ?" for name in columns)
        return self._execute(f"UPDATE rooms SET {assignments} WHERE id = ?",
                             (*columns.values(), room_id))

    @defer.inlineCallbacks
    def delete_room(self, room_id: int):
        """The room's messages go first, at most C{ROOM_PURGE_BATCH} per
        transaction: SQLite's writer runs on the reactor thread, and a million
        messages deleted in one statement froze every connection for five
        seconds. The room, its wraps and whatever was stored meanwhile go
        last, together. A daemon stopped halfway leaves the room there, with
        a shorter history, to be deleted again."""
        purge = self._sql("DELETE FROM messages WHERE room_id = ? AND server_seq <"
                          " (SELECT MIN(server_seq) FROM messages WHERE room_id = ?) + ?")
        wraps, rooms = self._sql("DELETE FROM wraps WHERE room_id = ?"), self._sql(
            "DELETE FROM rooms WHERE id = ?")

        def purge_some(txn):
            txn.execute(purge, (room_id, room_id, ROOM_PURGE_BATCH))
            return txn.rowcount

        def interaction(txn):
            txn.execute(wraps, (room_id,))
            txn.execute(rooms, (room_id,))

        while (yield self._run(purge_some)):
            pass
        yield self._run(interaction)

    # -- messages ------------------------------------------------------------

    def purge_messages(self, room_id: int, before: float, limit: int):
        """Delete the room's oldest messages received before C{before}, at most
        C{limit} of them, in one transaction; fire with how many went. Oldest
        first by server_seq: the walk stops at the first one still kept, so a
        room with nothing to expire costs one row read."""
        oldest = self._sql("SELECT server_seq, received FROM messages WHERE room_id = ?"
                           " ORDER BY server_seq LIMIT ?")
        delete = self._sql("DELETE FROM messages WHERE room_id = ? AND server_seq <= ?")
        mark = self._sql("UPDATE rooms SET purged_through = ? WHERE id = ? AND"
                         " purged_through < ?")

        def interaction(txn):
            txn.execute(oldest, (room_id, limit))
            expired = 0
            last = None
            for server_seq, received in txn.fetchall():
                if received >= before:
                    break
                expired, last = expired + 1, server_seq
            if last is not None:
                txn.execute(delete, (room_id, last))
                txn.execute(mark, (last, room_id, last))
            return expired

        return self._run(interaction)

    # -- storage budget ------------------------------------------------------

    def add_usage(self, day: int, usage: dict[int, int]):
        upsert = self._sql(
            "INSERT INTO storage_usage (user_id, day, bytes) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id, day) DO UPDATE SET bytes = storage_usage.bytes"
            " + excluded.bytes")
        forget = self._sql("DELETE FROM storage_usage WHERE day < ?")

        def interaction(txn):
            for user_id, size in sorted(usage.items()):
                txn.execute(upsert, (user_id, day, size))
            txn.execute(forget, (day - 1,))

        return self._run(interaction)

    def usage(self, day: int):
        return self._select("SELECT user_id, bytes FROM storage_usage WHERE day = ?", (day,),
                            lambda user_id, size: (user_id, size)).addCallback(dict)

    def history(self, room_id: int, before: int | None, after: int | None, limit: int):
        if after is not None:
            return self._select(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ? AND server_seq > ?"
                " ORDER BY server_seq LIMIT ?", (room_id, after, limit), MessageRow)
        newest_first = self._select(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ? AND server_seq < ?"
            " ORDER BY server_seq DESC LIMIT ?",
            (room_id, before if before is not None else NEWEST, limit), MessageRow)
        return newest_first.addCallback(lambda rows: rows[::-1])

    # -- key directory -------------------------------------------------------

    def add_wrap(self, row: WrapRow):
        upsert = self._sql(
            "INSERT INTO wraps (room_id, epoch, user_id, wrapper_id, wrap) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (room_id, epoch, user_id)"
            " DO UPDATE SET wrapper_id = excluded.wrapper_id, wrap = excluded.wrap")
        resolved = self._sql(
            "DELETE FROM wrap_requests WHERE room_id = ? AND user_id = ? AND epoch <= ?")

        def interaction(txn):
            txn.execute(upsert, (row.room_id, row.epoch, row.user_id, row.wrapper_id, row.wrap))
            txn.execute(resolved, (row.room_id, row.user_id, row.epoch))

        return self._run(interaction)

    def next_seq(self, room_id: int, user_id: int):
        statement = self._sql("SELECT MAX(seq) FROM messages WHERE room_id = ? AND sender_id = ?")

        def interaction(txn):
            txn.execute(statement, (room_id, user_id))
            return (txn.fetchone()[0] or 0) + 1

        return self._read(interaction)

    def epochs(self, room_id: int, from_epoch: int):
        return self._select(
            "SELECT room_id, epoch, rotator_id, record, signature FROM epochs"
            " WHERE room_id = ? AND epoch >= ? ORDER BY epoch", (room_id, from_epoch), EpochRow)

    def wraps_for(self, user_id: int, room_id: int, from_epoch: int):
        return self._select(
            "SELECT room_id, epoch, user_id, wrapper_id, wrap FROM wraps"
            " WHERE user_id = ? AND room_id = ? AND epoch >= ? ORDER BY epoch",
            (user_id, room_id, from_epoch), WrapRow)

    def put_wrap_request(self, row: WrapRequestRow):
        return self._execute(
            "INSERT INTO wrap_requests (room_id, user_id, epoch, created, withheld_by,"
            " withheld_code, withheld_text) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (room_id, user_id) DO UPDATE SET epoch = excluded.epoch,"
            " created = excluded.created, withheld_by = excluded.withheld_by,"
            " withheld_code = excluded.withheld_code, withheld_text = excluded.withheld_text",
            (row.room_id, row.user_id, row.epoch, row.created, row.withheld_by,
             row.withheld_code, row.withheld_text))

    def delete_wrap_request(self, room_id: int, user_id: int):
        return self._execute("DELETE FROM wrap_requests WHERE room_id = ? AND user_id = ?",
                             (room_id, user_id))
