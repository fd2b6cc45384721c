"""Nick and room-name rules: one place decides what a valid name is and
when two names are the same (case-insensitively)."""

import re

from securechat.constants import NICK_PATTERN, ROOM_PATTERN
from securechat.wire import Code, WireError

_NICK = re.compile(NICK_PATTERN + r"\Z")
_ROOM = re.compile(ROOM_PATTERN + r"\Z")


def fold(name: str) -> str:
    """The key under which a name is unique: ``Alice`` and ``alice`` collide."""
    return name.casefold()


def is_nick(nick: str) -> bool:
    return _NICK.match(nick) is not None


def check_nick(nick: str) -> str:
    if not _NICK.match(nick):
        raise WireError(
            Code.BAD_NAME,
            "a nick is 1-24 letters, digits, '-' or '_', starting with a letter",
        )
    return nick


def check_room(name: str) -> str:
    if not _ROOM.match(name):
        raise WireError(
            Code.BAD_NAME,
            "a room name is '#' and 1-32 letters, digits, '-', '_' or '.'",
        )
    return name
