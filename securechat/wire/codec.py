"""Framing of one protocol line: bytes in, a L{Frame} out, and back.

This module is pure (no I/O, no Twisted) so that the server, the client core,
the benchmarks and the fuzzers all parse exactly the same way. The grammar it
implements is specified in docs/protocol.md:

    line     = verb SP id *( SP token ) [ SP ":" trailing ] [CR] LF
    verb     = UPPER 0*15( UPPER / DIGIT / "_" )
    id       = 1*32( ALPHA / DIGIT / "-" / "_" / "." ) / "*"
    token    = 1*( %x21-7E ), not starting with ":"
    trailing = *( any Unicode scalar except control characters )

Controls (C0, DEL, C1) are refused anywhere: they have no business in a chat
protocol and are the raw material of terminal-injection attacks.
"""

import base64
import binascii
import re
from dataclasses import dataclass

from securechat.constants import MAX_REQUEST_ID_LENGTH
from securechat.wire.errors import NO_REQUEST_ID, Code, WireError

_VERB = re.compile(rb"[A-Z][A-Z0-9_]{0,15}\Z")
_REQUEST_ID = re.compile(rb"(?:[A-Za-z0-9._-]{1,%d}|\*)\Z" % MAX_REQUEST_ID_LENGTH)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BASE64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# Every message passes through these checks twice (in and out), some of its
# fields a kilobyte long: str methods written in C do them several times
# faster than the equivalent regular expressions.


def _has_control(text: str) -> bool:
    """Any C0, DEL or C1 character? (They are never printable, so a printable
    string needs no closer look.)"""
    return not text.isprintable() and _CONTROL.search(text) is not None


def _is_token(text: str) -> bool:
    """One or more of %x21-7E: printable ASCII without a space."""
    return text.isascii() and text.isprintable() and " " not in text and text != ""


@dataclass(frozen=True)
class Frame:
    """One parsed line: a verb, the request id it belongs to, its arguments.

    The trailing argument, if any, is simply the last element of C{args}; the
    grammar of each verb (L{securechat.wire.grammar}) decides what it means.
    """

    verb: str
    request_id: str
    args: tuple[str, ...] = ()


def parse_line(line: bytes) -> Frame:
    """Parse one line, without its LF, into a L{Frame}.

    @raise WireError: for anything that is not a well-formed line; the error
        carries the line's request id whenever that much could be read, so
        the peer can match the error to its request.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line:
        raise WireError(Code.BAD_SYNTAX, "empty line")
    head = line.split(b" ", 2)
    request_id = NO_REQUEST_ID
    if len(head) > 1 and _REQUEST_ID.match(head[1]):
        request_id = head[1].decode("ascii")

    def fail(code, text):
        return WireError(code, text, request_id)

    if b"\x00" in line:
        raise fail(Code.BAD_SYNTAX, "NUL byte in line")
    if not _VERB.match(head[0]):
        raise fail(Code.BAD_SYNTAX, "a line starts with an upper-case verb")
    if len(head) == 1:
        raise fail(Code.BAD_SYNTAX, "missing request id after the verb")
    if request_id == NO_REQUEST_ID and head[1] != b"*":
        raise fail(
            Code.BAD_SYNTAX,
            f"a request id is 1-{MAX_REQUEST_ID_LENGTH} of A-Z a-z 0-9 . _ -",
        )
    rest = b""
    if len(head) == 3:
        rest = head[2]
        if not rest:
            raise fail(Code.BAD_SYNTAX, "trailing space")
    try:
        text = rest.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(Code.BAD_ENCODING, "line is not valid UTF-8") from None
    if _has_control(text):
        raise fail(Code.BAD_SYNTAX, "control character in line")
    return Frame(head[0].decode("ascii"), request_id, _split_args(text, fail))


def _split_args(text: str, fail) -> tuple[str, ...]:
    args = []
    while text:
        if text.startswith(":"):
            args.append(text[1:])
            break
        token, space, text = text.partition(" ")
        if not token:
            raise fail(Code.BAD_SYNTAX, "empty argument (two spaces in a row)")
        if not _is_token(token):
            raise fail(Code.BAD_SYNTAX, "non-ASCII text must be the ':' argument")
        if space and not text:
            raise fail(Code.BAD_SYNTAX, "trailing space")
        args.append(token)
    return tuple(args)


def encode_frame(verb: str, request_id: str, *args: str) -> bytes:
    """Serialise a frame, without the LF; the inverse of L{parse_line}.

    The last argument is sent as a ":" trailing argument when it needs to be
    (it is empty, has spaces or non-ASCII text, or starts with ":").

    @raise ValueError: when the frame could not be parsed back identically;
        that is a bug in the caller, never a peer's fault.
    """
    if not _VERB.match(verb.encode("ascii", "replace")):
        raise ValueError(f"bad verb {verb!r}")
    if not _REQUEST_ID.match(request_id.encode("ascii", "replace")):
        raise ValueError(f"bad request id {request_id!r}")
    parts = [verb, request_id]
    for index, arg in enumerate(args):
        if _has_control(arg):
            raise ValueError(f"control character in argument {index}")
        if _is_token(arg) and not arg.startswith(":"):
            parts.append(arg)
        elif index == len(args) - 1:
            parts.append(":" + arg)
        else:
            raise ValueError(f"argument {index} is not a token: {arg!r}")
    return " ".join(parts).encode("utf-8")


def b64encode(data: bytes) -> str:
    """Binary to base64url without padding, the form every binary field takes."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Base64url, padded or not, to bytes.

    @raise ValueError: for any other alphabet, bad padding, or a length no
        encoder could have produced.
    """
    padded = text.encode("ascii", "replace")
    raw = padded.rstrip(b"=")
    if len(padded) - len(raw) > 2 or raw.translate(None, _BASE64URL_ALPHABET):
        raise ValueError("not base64url")
    if len(raw) % 4 == 1:
        raise ValueError("impossible base64 length")
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except binascii.Error as error:
        raise ValueError(str(error)) from None
