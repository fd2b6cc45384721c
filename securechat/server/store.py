# -*- test-case-name: tests.test_sqlite_store -*-
"""The store interface: every byte the daemon keeps goes through it.

Room logic never sees SQL; a PostgreSQL store can implement the same
interface. Every method returns a Deferred that fires after its transaction
has committed, and the daemon acknowledges nothing before that.
"""

from dataclasses import dataclass, field

from zope.interface import Interface


class NameTaken(Exception):
    """A nick, key or room name is already in the database (another daemon was first)."""


class RegistrationTokenInvalid(Exception):
    """The registration token is unknown or already used."""


class LogConflict(Exception):
    """Another entry took that place in the room's log first."""


class StorageFull(Exception):
    """The database's disk (or its configured size) is full: the write was
    refused and nothing of it kept. Reads still work, and writes work again
    as soon as there is room."""


@dataclass
class UserRow:
    id: int
    nick: str
    sign_key: bytes
    enc_key: bytes
    enc_signature: bytes
    fingerprint: bytes
    banned: bool = False


@dataclass
class RoomRow:
    id: int
    name: str
    topic: str
    invite_only: bool
    password_hash: bytes | None
    rekey_required: bool
    created: float
    members: dict[int, str] = field(default_factory=dict)
    bans: set[int] = field(default_factory=set)
    invites: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    epoch: int = 0
    epoch_record: bytes = b""
    epoch_created: float = 0.0
    epoch_messages: int = 0
    holders: set[int] = field(default_factory=set)
    last_seq: int = 0
    # Days its messages are kept, as its owner asked; 0: the server's setting.
    retention_days: int = 0
    # Its signed log as stored, (data, signature) per entry; None for a room
    # from before the log that nobody has upgraded yet. The service replays it
    # into C{state} (a securechat.roomlog.RoomState) and lets the entries go.
    log: list | None = None
    state: object = None


@dataclass
class WrapRequestRow:
    room_id: int
    user_id: int
    epoch: int
    created: float
    withheld_by: int | None = None
    withheld_code: str | None = None
    withheld_text: str | None = None


@dataclass
class Snapshot:
    """Everything the daemon keeps in memory, as loaded at start."""

    users: list[UserRow]
    rooms: list[RoomRow]
    wrap_requests: list[WrapRequestRow]
    # Every identity key a user ever had (keys replaced by a reset included),
    # by fingerprint: a room log names members by the key they had then.
    fingerprints: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MessageRow:
    room_id: int
    sender_id: int
    epoch: int
    seq: int
    message_id: bytes
    token: bytes
    signature: bytes
    received: float
    server_seq: int = 0


@dataclass(frozen=True)
class AppendResult:
    """What became of one appended message.

    @ivar outcome: "stored", "duplicate" (this exact message was stored
        before), "seq_reused" (the sender's seq was used by another message),
        "gone" (its room was deleted meanwhile) or "stale" (another daemon
        changed the room's key meanwhile; a shared database checks this).
    """

    outcome: str
    server_seq: int


@dataclass
class LogEffects:
    """What an entry of a room's log changes in the tables that mirror it,
    written in the entry's own transaction (the log itself decides; these
    are what SQL elsewhere reads)."""

    members: dict = field(default_factory=dict)  # user id -> role, or None: removed
    bans: dict = field(default_factory=dict)  # user id -> banned by, or None: unbanned
    room: dict = field(default_factory=dict)  # rooms columns to set
    epoch: "EpochRow | None" = None
    wraps: dict = field(default_factory=dict)  # user id -> (wrapper id, wrap), for epoch


@dataclass(frozen=True)
class EpochRow:
    room_id: int
    epoch: int
    rotator_id: int
    record: bytes
    signature: bytes


@dataclass(frozen=True)
class WrapRow:
    room_id: int
    epoch: int
    user_id: int
    wrapper_id: int
    wrap: bytes


class IStore(Interface):
    """Durable state. Each method is one transaction; each returns a Deferred."""

    def load():
        """Fire with a L{Snapshot} of users, rooms and pending wrap requests."""

    def load_room(room_id):
        """Fire with (L{RoomRow} or None if deleted, its L{WrapRequestRow}s), as
        stored now: another daemon changed it."""

    def room_id(name):
        """Fire with the id of the room called C{name} (any case), or None."""

    def load_user(user_id):
        """Fire with the L{UserRow} as stored now, or None."""

    def close():
        """Finish in-flight transactions and close the database."""

    def add_user(user, now, token_digest):
        """Insert C{user} (id ignored), consuming C{token_digest} if given; fire with the id.
        Fails with L{RegistrationTokenInvalid} if the token is unknown or used."""

    def add_registration_token(digest, now, resets=None):
        """Store a registration token's digest; with C{resets} (a user id), the token
        lets that user register their nick again with new keys."""

    def reset_user(user, token_digest):
        """Give C{user} (by id) its new keys, consuming a reset token made for it;
        drop wraps to the old keys and mark the user's rooms for a new key. Fails with
        L{RegistrationTokenInvalid} if the token is not a live reset token for the user."""

    def load_users():
        """Fire with every L{UserRow}, as stored now (after an operator's change)."""

    def data_version():
        """Fire with a number that changes when another process commits to the store."""

    def prune_idle_users(created_before):
        """Delete the accounts created before then that were never in a room (and
        what names them); fire with their nicks."""

    def set_user_banned(user_id, banned):
        """Ban or unban an account server-wide."""

    def create_room(name, owner_id, now, genesis=None):
        """Insert a room with its owner as first member, and its log's genesis
        entry ((data, signature)) if given; fire with the room id."""

    def update_room(room_id, **columns):
        """Set topic, invite_only, password_hash, rekey_required or retention_days."""

    def delete_room(room_id):
        """Delete a room and everything in it."""

    def append_messages(rows):
        """Store a batch of L{MessageRow}s in one transaction, assigning each
        room's next server_seq; fire with an L{AppendResult} per row."""

    def purge_messages(room_id, before, limit):
        """Delete up to C{limit} of the room's oldest messages received before
        C{before} (a time), in one transaction; fire with how many. The room's
        server_seq goes on from where they ended."""

    def add_usage(day, usage):
        """Add C{usage} ({user_id: bytes} stored on UTC day C{day}) to the day's
        totals, and forget days before the previous one."""

    def usage(day):
        """Fire with {user_id: bytes} stored on UTC day C{day}, by every daemon."""

    def history(room_id, before, after, limit):
        """Fire with up to C{limit} L{MessageRow}s with server_seq < before
        (newest first, returned oldest first) or > after (oldest first)."""

    def add_wrap(row):
        """Store one wrap and resolve the matching wrap request."""

    def next_seq(room_id, user_id):
        """Fire with the seq after the user's last message in the room (1 if none)."""

    def epochs(room_id, from_epoch):
        """Fire with the room's L{EpochRow}s from C{from_epoch} on."""

    def wraps_for(user_id, room_id, from_epoch):
        """Fire with the L{WrapRow}s addressed to a user in a room."""

    def put_wrap_request(row):
        """Insert or replace a user's wrap request for a room."""

    def delete_wrap_request(room_id, user_id):
        """Drop a wrap request."""

    def append_entry(room_id, index, data, signature, now, effects):
        """Store entry C{index} of a room's log and its L{LogEffects}, in one
        transaction. Fails with L{LogConflict} if that index is taken (another
        entry was appended first: the log is ordered by compare-and-set)."""

    def log(room_id, from_index, limit):
        """Fire with up to C{limit} (index, data, signature) of a room's log from
        C{from_index} on."""
