"""The lines the server sends besides OK and ERROR, built in one place.

Each function returns a verb and its arguments; the protocol encodes them
with a request id (when they answer a request) or ``*`` (when pushed). The
service and the registries never format lines themselves.
"""

from securechat.constants import REPLY_BUDGET_BYTES
from securechat.server.store import EpochRow, MessageRow, RoomRow, UserRow, WrapRow
from securechat.wire import b64encode, encode_frame

Event = tuple[str, tuple[str, ...]]


def line(request_id: str, event: Event) -> bytes:
    """The complete line for C{event}, LF included: encoded once, sent to many."""
    verb, args = event
    return encode_frame(verb, request_id, *args) + b"\n"


def room_flags(room: RoomRow, history: str, retention_days: int) -> str:
    flags = [history]
    if room.invite_only:
        flags.append("invite_only")
    if room.password_hash:
        flags.append("password")
    if room.rekey_required:
        flags.append("rekey")
    if retention_days:
        flags.append(f"retention={retention_days}")
    return ",".join(flags)


def room_state(room: RoomRow, role: str, history: str, retention_days: int,
               next_seq: int = 1) -> Event:
    """A room as the server sees it; a client believes the log, not this."""
    log_length = room.state.length if room.state is not None else 0
    return "ROOM", (room.name, role, str(room.epoch), str(room.last_seq),
                    room_flags(room, history, retention_days), str(len(room.members)),
                    str(log_length), str(next_seq), room.topic)


def room_info(room: RoomRow) -> Event:
    return "ROOMINFO", (room.name, str(len(room.members)), room.topic)


def user_keys(user: UserRow) -> tuple[str, ...]:
    return (user.nick, b64encode(user.sign_key), b64encode(user.enc_key),
            b64encode(user.enc_signature))


def user(user: UserRow) -> Event:
    return "USER", user_keys(user)


def member(room: RoomRow, user: UserRow, role: str, online: bool) -> Event:
    """A member as the server sees them (for display: clients believe the log)."""
    return "MEMBER", (room.name, role, "1" if online else "0", *user_keys(user))


def message(room: RoomRow, row: MessageRow, sender: str) -> Event:
    return "MESSAGE", (room.name, str(row.server_seq), sender, str(row.epoch), str(row.seq),
                       b64encode(row.message_id), b64encode(row.token),
                       b64encode(row.signature), str(int(row.received * 1000)))


def epoch(room: RoomRow, row: EpochRow, rotator: str) -> Event:
    return "EPOCH", (room.name, str(row.epoch), rotator, b64encode(row.record),
                     b64encode(row.signature))


def key(room: RoomRow, row: WrapRow, wrapper: str) -> Event:
    return "KEY", (room.name, str(row.epoch), wrapper, b64encode(row.wrap))


def wrap_request(room: RoomRow, epoch_number: int, nick: str) -> Event:
    return "WRAPREQ", (room.name, str(epoch_number), nick)


def withheld(room: RoomRow, epoch_number: int, by: str, code: str, text: str) -> Event:
    return "WITHHELD", (room.name, str(epoch_number), by, code, text)


def pending(room: RoomRow, epoch_number: int) -> Event:
    return "PENDING", (room.name, str(epoch_number))


def entry(room: RoomRow, index: int, data: bytes, signature: bytes) -> Event:
    """An entry of a room's log, as its author signed it."""
    return "ENTRY", (room.name, str(index), b64encode(data), b64encode(signature))


def topic(room: RoomRow, by: str) -> Event:
    return "TOPIC", (room.name, by, room.topic)


def settings(room: RoomRow, by: str, history: str, retention_days: int) -> Event:
    return "SETTINGS", (room.name, by, room_flags(room, history, retention_days))


def invited(room: RoomRow, by: str) -> Event:
    return "INVITED", (room.name, by)


def deleted(room: RoomRow, by: str) -> Event:
    return "DELETED", (room.name, by)


def more(room: RoomRow, after: int) -> Event:
    return "MORE", (room.name, str(after))


def within_budget(rows, keep_newest: bool):
    """As many rows as fit in REPLY_BUDGET_BYTES (always at least one): a reply
    must never be so big that a client reading at full speed trips the
    slow-reader limit. The client pages on for the rest."""
    kept, size = [], 0
    for row in reversed(rows) if keep_newest else rows:
        # The line's size: base64 of token and signature, and the other fields.
        size += (len(row.token) + len(row.signature)) * 4 // 3 + 256
        if kept and size > REPLY_BUDGET_BYTES:
            break
        kept.append(row)
    return list(reversed(kept)) if keep_newest else kept
