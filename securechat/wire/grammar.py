"""What each verb takes, declared once and checked in one place.

A L{Verb} turns a L{Frame}'s string arguments into typed Python values, or
raises the L{WireError} its peer should see. Both sides of the connection
use the same declarations, so a line one side can send is a line the other
side can read.
"""

import re
from dataclasses import dataclass

from securechat.constants import (
    AUTH_NONCE_BYTES,
    MAX_EPOCH_RECORD_BYTES,
    MAX_LINE_AUTHENTICATED,
    MAX_PING_PAYLOAD,
    MAX_REASON_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    MAX_ROOM_PASSWORD_LENGTH,
    MAX_TOPIC_LENGTH,
    MESSAGE_ID_BYTES,
    RSA_BITS,
    WRAP_BYTES,
)
from securechat.wire.codec import Frame, b64decode
from securechat.wire.errors import Code, WireError

# The largest integer any field carries (a signed 64-bit column), and its width.
MAX_INT = 2**63 - 1
_INT_DIGITS = len(str(MAX_INT))
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]{0,18})\Z")

# A UTF-8 character takes at most this many octets.
_UTF8_MAX = 4


@dataclass(frozen=True)
class Param:
    """One positional argument: its name, its kind and its bounds.

    Kinds: C{token} (printable ASCII word), C{int} (decimal, 0..2**63-1),
    C{b64} (base64url, decoded to bytes) and C{text} (any UTF-8, or ASCII
    only when C{ascii}; the only kind that may hold spaces, so it is always
    the last argument). C{max_length} counts characters, or decoded bytes
    for C{b64}.
    """

    name: str
    kind: str = "token"
    max_length: int = 256
    optional: bool = False
    ascii: bool = False

    def convert(self, value: str, verb: str):
        if len(value) > self._max_wire_length():
            raise WireError(Code.BAD_ARGUMENTS, f"{verb} {self.name} is too long")
        if self.kind == "text":
            if self.ascii and not value.isascii():
                raise WireError(Code.BAD_ARGUMENTS, f"{verb} {self.name} must be ASCII")
            return value
        if self.kind == "int":
            if not _DECIMAL.match(value) or int(value) > MAX_INT:
                raise WireError(Code.BAD_ARGUMENTS, f"{verb} {self.name} must be a decimal integer")
            return int(value)
        if self.kind == "b64":
            try:
                data = b64decode(value)
            except ValueError as error:
                raise WireError(Code.BAD_BASE64, f"{verb} {self.name}: {error}") from None
            if len(data) > self.max_length:
                raise WireError(Code.BAD_ARGUMENTS,
                                f"{verb} {self.name} is over {self.max_length} bytes")
            return data
        if " " in value or not value.isascii() or not value:
            raise WireError(Code.BAD_ARGUMENTS, f"{verb} {self.name} must be one ASCII word")
        return value

    def _max_wire_length(self) -> int:
        """A cheap bound checked before decoding, so no huge value is decoded."""
        if self.kind == "b64":
            return (self.max_length * 4 + 2) // 3 + 2
        return self.max_length

    def wire_bytes(self) -> int:
        """The most octets this argument can take on a line that is accepted,
        a text's ":" included: what the line limits are checked against."""
        if self.kind == "int":
            return _INT_DIGITS
        if self.kind == "text":
            return 1 + self.max_length * (1 if self.ascii else _UTF8_MAX)
        return self._max_wire_length()


@dataclass(frozen=True)
class Verb:
    """A verb and its parameters, in order; optional ones come last."""

    name: str
    params: tuple[Param, ...] = ()

    def bind(self, frame: Frame) -> dict:
        """Check C{frame} against this declaration and return its typed arguments.

        @raise WireError: C{BAD_ARGUMENTS} for a wrong count or a bad value,
            C{BAD_BASE64} for a binary field that does not decode; the error
            carries the frame's request id.
        """
        required = sum(1 for p in self.params if not p.optional)
        if not required <= len(frame.args) <= len(self.params):
            expected = (
                str(required)
                if required == len(self.params)
                else f"{required} to {len(self.params)}"
            )
            raise WireError(
                Code.BAD_ARGUMENTS,
                f"{self.name} takes {expected} argument(s), got {len(frame.args)}"
                + (f" (usage: {self.usage()})" if self.params else ""),
                frame.request_id,
            )
        try:
            values = {
                p.name: p.convert(v, self.name) for p, v in zip(self.params, frame.args)
            }
        except WireError as error:
            raise error.with_request_id(frame.request_id) from None
        for p in self.params[len(frame.args) :]:
            values[p.name] = None
        return values

    def leading_values(self, tokens) -> dict:
        """The typed values of the leading arguments that are valid, up to the
        first that is not: what can still be read of a line that failed (a
        MESSAGE whose token is malformed still names its room and seq)."""
        values = {}
        for param, token in zip(self.params, tokens):
            if param.kind == "text":
                break
            try:
                values[param.name] = param.convert(token, self.name)
            except WireError:
                break
        return values

    def worst_case_line(self, request_id_length: int = MAX_REQUEST_ID_LENGTH) -> int:
        """The longest line of this verb a peer may send, without its LF."""
        return len(self.name) + 1 + request_id_length + sum(1 + p.wire_bytes()
                                                            for p in self.params)

    def usage(self) -> str:
        words = [self.name, "<id>"]
        for p in self.params:
            words.append(f"[{p.name}]" if p.optional else f"<{p.name}>")
        return " ".join(words)


def verbs(*declared: Verb) -> dict[str, Verb]:
    """A lookup table of verbs by name."""
    return {verb.name: verb for verb in declared}


_PAYLOAD = Param("payload", "b64", MAX_PING_PAYLOAD, optional=True)

# Either side may check the other is alive; the payload is echoed.
PING = Verb("PING", (_PAYLOAD,))
PONG = Verb("PONG", (_PAYLOAD,))

_ROOM = Param("room", max_length=33)
_NICK = Param("nick", max_length=24)
_EPOCH = Param("epoch", "int")
_SEQ = Param("seq", "int")
_PUBLIC_KEY_BYTES = 600
_SIGNATURE_BYTES = RSA_BITS // 8


def _key(name: str) -> Param:
    return Param(name, "b64", _PUBLIC_KEY_BYTES)


def _signature(name: str = "signature", optional: bool = False) -> Param:
    return Param(name, "b64", _SIGNATURE_BYTES, optional=optional)


def _text(name: str, limit: int, optional: bool = True) -> Param:
    return Param(name, "text", limit, optional=optional)


def binary_capacity(octets: int) -> int:
    """The most bytes a b64 argument may declare and still take at most
    C{octets} on the line (the inverse of L{Param.wire_bytes})."""
    size = max(0, (octets - 2) * 3 // 4)
    while Param("x", "b64", size + 1).wire_bytes() <= octets:
        size += 1
    while size and Param("x", "b64", size).wire_bytes() > octets:
        size -= 1
    return size


_SERVER_SEQ = Param("server_seq", "int")
_MESSAGE_ID = Param("message_id", "b64", MESSAGE_ID_BYTES)
# A MESSAGE line without its token: what the token's share of the line
# limit is computed from, so that the longest stored message still reaches
# every member in one line, under the longest request id of a HISTORY reply.
_MESSAGE_HEAD = (_ROOM, _SERVER_SEQ, Param("sender", max_length=24), _EPOCH, _SEQ, _MESSAGE_ID)
_MESSAGE_TAIL = (_signature(), Param("received_ms", "int"))

# The largest Fernet token a message may carry: all the line limit leaves.
MAX_TOKEN_BYTES = binary_capacity(
    MAX_LINE_AUTHENTICATED - 1 - Verb("MESSAGE", _MESSAGE_HEAD + _MESSAGE_TAIL).worst_case_line()
)

_WRAP = Param("wrap", "b64", WRAP_BYTES)
_TOKEN = Param("token", "b64", MAX_TOKEN_BYTES)

# A room log entry's position, and the entry itself: as much as the longest
# line carrying one (a ROTATE with its wrap, a JOIN with its password) leaves.
_INDEX = Param("index", "int")
_JOIN_HEAD = (_ROOM, _INDEX)
_JOIN_TAIL = (_signature(), Param("password", "text", MAX_ROOM_PASSWORD_LENGTH, optional=True))
_ROTATE_TAIL = (_signature(), Param("own_wrap", "b64", WRAP_BYTES))
MAX_ENTRY_BYTES = binary_capacity(MAX_LINE_AUTHENTICATED - 1 - max(
    Verb("JOIN", _JOIN_HEAD + _JOIN_TAIL).worst_case_line(),
    Verb("ROTATE", _JOIN_HEAD + _ROTATE_TAIL).worst_case_line()))
_ENTRY = Param("entry", "b64", MAX_ENTRY_BYTES)
_RECORD = Param("record", "b64", MAX_EPOCH_RECORD_BYTES)
_KEYS = (_key("sign_key"), _key("enc_key"), _signature("enc_signature"))

# WRAPS and HANDOVER carry "fingerprint:wrap" pairs (base64url, unpadded) in one line.
WRAP_PAIR_LENGTH = 43 + 1 + 512 + 1
WRAPS_LENGTH = MAX_LINE_AUTHENTICATED - 2 - Verb("HANDOVER", (_ROOM, _EPOCH)).worst_case_line()
WRAPS_PER_LINE = (WRAPS_LENGTH + 1) // WRAP_PAIR_LENGTH

# SYNC names every room of the user with its position, "#room=seq" and a
# space each, in one line: the rooms one user may be in follow from that.
SYNC_POSITIONS_LENGTH = MAX_LINE_AUTHENTICATED - 2 - Verb("SYNC").worst_case_line()
MAX_SYNC_ROOMS = (SYNC_POSITIONS_LENGTH + 1) // (_ROOM.max_length + 1 + _INT_DIGITS + 1)

# What a client may send to the server (docs/protocol.md, section 6).
CLIENT_VERBS = verbs(
    PING,
    PONG,
    Verb("REGISTER", (_NICK, *_KEYS, _signature("login_signature"), Param("token", optional=True))),
    Verb("LOGIN", (_NICK, _signature("login_signature"))),
    # Joining (or creating) a room is appending one's join (or its genesis).
    Verb("JOIN", (*_JOIN_HEAD, _ENTRY, *_JOIN_TAIL)),
    # Every other change to a room is an entry of its log, or a rotation.
    Verb("APPEND", (_ROOM, _INDEX, _ENTRY, _signature())),
    Verb("LOG", (_ROOM, Param("from_index", "int"))),
    Verb("TOPIC", (_ROOM, _text("topic", MAX_TOPIC_LENGTH, optional=False))),
    Verb("SET", (_ROOM, Param("setting", max_length=16),
                 _text("value", MAX_ROOM_PASSWORD_LENGTH))),
    Verb("LIST", (Param("after", max_length=33, optional=True),)),
    Verb("WHO", (_ROOM, Param("after", max_length=24, optional=True))),
    Verb("USERKEYS", (_NICK,)),
    Verb("DELETE", (_ROOM,)),
    Verb("MSG", (_ROOM, _EPOCH, _SEQ, _MESSAGE_ID, _TOKEN, _signature())),
    Verb("HISTORY", (_ROOM, Param("direction", max_length=6), Param("server_seq", "int"),
                     Param("limit", "int"))),
    Verb("SYNC", (Param("positions", "text", SYNC_POSITIONS_LENGTH, optional=True, ascii=True),)),
    Verb("EPOCHS", (_ROOM, Param("from_epoch", "int"))),
    Verb("ROTATE", (*_JOIN_HEAD, _ENTRY, *_ROTATE_TAIL)),
    # Wraps of the key of the epoch about to be appended, "fingerprint:wrap"
    # pairs (base64url), as many as a line holds.
    Verb("WRAPS", (_ROOM, _EPOCH, Param("wraps", "text", WRAPS_LENGTH, ascii=True))),
    # Copies of the current key for members the log says hold it (a share).
    Verb("HANDOVER", (_ROOM, _EPOCH, Param("wraps", "text", WRAPS_LENGTH, ascii=True))),
    Verb("KEYREQ", (_ROOM,)),
    Verb("WITHHOLD", (_ROOM, _EPOCH, _NICK, Param("code", max_length=32),
                      _text("text", MAX_REASON_LENGTH))),
)

_BY = Param("by", max_length=24)

# What the server may send to a client: replies, data lines and events.
SERVER_VERBS = verbs(
    PING,
    PONG,
    Verb("HELLO", (Param("protocol"), Param("version", "int"), Param("server"),
                   Param("nonce", "b64", AUTH_NONCE_BYTES), _text("text", 512, optional=False))),
    Verb("OK", (Param("a", optional=True), Param("b", optional=True), Param("c", optional=True))),
    Verb("ERROR", (Param("code", max_length=32), _text("text", 1024, optional=False))),
    Verb("DUPLICATE", (_SERVER_SEQ,)),
    # role and flags are the server's view, for display: a client believes the log.
    Verb("ROOM", (_ROOM, Param("role", max_length=6), _EPOCH, Param("last_seq", "int"),
                  Param("flags", max_length=64), Param("members", "int"),
                  Param("log_length", "int"), Param("next_seq", "int"),
                  _text("topic", MAX_TOPIC_LENGTH, optional=False))),
    Verb("ROOMINFO", (_ROOM, Param("members", "int"), _text("topic", MAX_TOPIC_LENGTH, False))),
    Verb("MEMBER", (_ROOM, Param("role", max_length=6), Param("online", "int"), _NICK, *_KEYS)),
    Verb("USER", (_NICK, *_KEYS)),
    Verb("MESSAGE", (*_MESSAGE_HEAD, _TOKEN, *_MESSAGE_TAIL)),
    Verb("EPOCH", (_ROOM, _EPOCH, Param("rotator", max_length=24), _RECORD, _signature())),
    Verb("KEY", (_ROOM, _EPOCH, Param("wrapper", max_length=24), _WRAP)),
    Verb("WRAPREQ", (_ROOM, _EPOCH, _NICK)),
    Verb("WITHHELD", (_ROOM, _EPOCH, _BY, Param("code", max_length=32),
                      _text("text", MAX_REASON_LENGTH, optional=False))),
    Verb("PENDING", (_ROOM, _EPOCH)),
    Verb("ENTRY", (_ROOM, _INDEX, _ENTRY, _signature())),
    Verb("TOPIC", (_ROOM, _BY, _text("topic", MAX_TOPIC_LENGTH, optional=False))),
    Verb("SETTINGS", (_ROOM, _BY, Param("flags", max_length=64))),
    Verb("INVITED", (_ROOM, _BY)),
    Verb("DELETED", (_ROOM, _BY)),
    Verb("MORE", (_ROOM, Param("after", "int"))),
    # Before a login's OK: the limits the client is to keep to (see securechat.wire.limits).
    Verb("LIMITS", (Param("limits", "text", 512, ascii=True),)),
    # Before an ERROR RATE_LIMITED: how long to wait before trying again.
    Verb("RETRY", (Param("after_ms", "int"),)),
)
