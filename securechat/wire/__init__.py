"""The line protocol shared by server and client: pure functions, no I/O."""

from securechat.wire.codec import Frame, b64decode, b64encode, encode_frame, parse_line
from securechat.wire.errors import NO_REQUEST_ID, Code, WireError
from securechat.wire.grammar import CLIENT_VERBS, SERVER_VERBS, Param, Verb

__all__ = [
    "CLIENT_VERBS",
    "Code",
    "Frame",
    "NO_REQUEST_ID",
    "Param",
    "SERVER_VERBS",
    "Verb",
    "WireError",
    "b64decode",
    "b64encode",
    "encode_frame",
    "parse_line",
]
