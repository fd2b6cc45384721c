"""The unambiguous byte strings that securechat signs and binds.

Every signed or bound value is a context string followed by length-prefixed
fields, so no two different field lists can ever produce the same bytes and
a signature made for one purpose can never be replayed for another.
"""

import struct


def transcript(context: bytes, *fields: bytes | str | int) -> bytes:
    """Encode C{context} and C{fields}: strings as UTF-8, ints as unsigned 64-bit.

    Every part, the context included, is prefixed with its 32-bit length.
    """
    parts = []
    for field in (context, *fields):
        if isinstance(field, bool):
            raise TypeError("booleans are not transcript fields")
        if isinstance(field, int):
            field = struct.pack(">Q", field)
        elif isinstance(field, str):
            field = field.encode("utf-8")
        parts.append(struct.pack(">I", len(field)))
        parts.append(field)
    return b"".join(parts)


# Context strings, one per purpose; a version suffix lets the scheme evolve.
AUTH = b"securechat/auth/v1"
SUBKEY = b"securechat/encryption-subkey/v1"
MESSAGE = b"securechat/message/v1"
EPOCH = b"securechat/epoch/v1"
WRAP_LABEL = b"securechat/wrap/v1"
KEY_ID = b"securechat/key-id/v1"
MEMBER_SET = b"securechat/member-set/v1"
ROOM_LOG = b"securechat/room-log/v1"
ROOM_CODE = b"securechat/room-code/v1"
