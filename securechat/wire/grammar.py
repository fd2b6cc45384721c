"""What each verb takes, declared once and checked in one place.

A L{Verb} turns a L{Frame}'s string arguments into typed Python values, or
raises the L{WireError} its peer should see. Both sides of the connection
use the same declarations, so a line one side can send is a line the other
side can read.
"""

import re
from dataclasses import dataclass

from securechat.constants import MAX_PING_PAYLOAD
from securechat.wire.codec import Frame, b64decode
from securechat.wire.errors import Code, WireError

_MAX_INT = 2**63 - 1
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]{0,18})\Z")


@dataclass(frozen=True)
class Param:
    """One positional argument: its name, its kind and its bounds.

    Kinds: C{token} (printable ASCII word), C{int} (decimal, 0..2**63-1),
    C{b64} (base64url, decoded to bytes) and C{text} (any UTF-8; the only
    kind that may hold spaces, so it is always the last argument).
    """

    name: str
    kind: str = "token"
    max_length: int = 256
    optional: bool = False

    def convert(self, value: str, verb: str):
        where = f"{verb} {self.name}"
        if len(value) > self._max_wire_length():
            raise WireError(Code.BAD_ARGUMENTS, f"{where} is too long")
        if self.kind == "text":
            return value
        if self.kind == "int":
            if not _DECIMAL.match(value) or int(value) > _MAX_INT:
                raise WireError(Code.BAD_ARGUMENTS, f"{where} must be a decimal integer")
            return int(value)
        if self.kind == "b64":
            try:
                data = b64decode(value)
            except ValueError as error:
                raise WireError(Code.BAD_BASE64, f"{where}: {error}") from None
            if len(data) > self.max_length:
                raise WireError(Code.BAD_ARGUMENTS, f"{where} is over {self.max_length} bytes")
            return data
        if " " in value or not value.isascii() or not value:
            raise WireError(Code.BAD_ARGUMENTS, f"{where} must be one ASCII word")
        return value

    def _max_wire_length(self) -> int:
        """A cheap bound checked before decoding, so no huge value is decoded."""
        if self.kind == "b64":
            return (self.max_length * 4 + 2) // 3 + 2
        return self.max_length


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

# What a client may send to the server.
CLIENT_VERBS = verbs(PING, PONG)

# What the server may send to a client; replies (OK, ERROR) and events.
SERVER_VERBS = verbs(
    Verb(
        "HELLO",
        (Param("protocol"), Param("version", "int"), Param("server"), Param("text", "text", 512)),
    ),
    Verb("ERROR", (Param("code", max_length=32), Param("text", "text", 1024))),
    PING,
    PONG,
)
