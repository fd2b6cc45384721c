"""Tests for securechat.wire: the pure line codec and verb grammar."""

import os
import re

from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from securechat.constants import MAX_LINE_AUTHENTICATED, MAX_LINE_UNAUTHENTICATED
from securechat.crypto.envelope import (
    LogPosition,
    MAX_MESSAGE_BYTES,
    MessageHeader,
    largest_body,
    seal,
    token_size,
)
from securechat.server.protocol import PRE_LOGIN_VERBS
from securechat.wire import codec
from securechat.wire.grammar import MAX_INT, MAX_SYNC_ROOMS, MAX_TOKEN_BYTES
from securechat.wire.limits import AnnouncedLimits
from securechat.wire import (
    CLIENT_VERBS,
    SERVER_VERBS,
    Code,
    Frame,
    Param,
    Verb,
    WireError,
    b64decode,
    b64encode,
    encode_frame,
    parse_line,
)
from tests.identities import identity

tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
texts = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), max_size=40
)
request_ids = st.from_regex(r"\A[A-Za-z0-9._-]{1,32}\Z")


class ParseLineTests(SynchronousTestCase):
    def assertWireError(self, line, code, request_id="*"):
        with self.assertRaises(WireError) as caught:
            parse_line(line)
        self.assertEqual((caught.exception.code, caught.exception.request_id), (code, request_id))

    def test_simple_request(self):
        """A verb and a request id parse with no arguments."""
        self.assertEqual(parse_line(b"PING 42"), Frame("PING", "42", ()))

    def test_trailing_argument(self):
        """A ':' argument runs to the end of the line, spaces and Unicode included."""
        self.assertEqual(
            parse_line("TOPIC 1 #lab :caf\u00e9 at 10: bring mugs".encode()),
            Frame("TOPIC", "1", ("#lab", "caf\u00e9 at 10: bring mugs")),
        )

    def test_crlf_accepted(self):
        """A CR before the LF is dropped, so CRLF clients work."""
        self.assertEqual(parse_line(b"PING 1\r"), Frame("PING", "1", ()))

    def test_invalid_utf8(self):
        """Invalid UTF-8 is BAD_ENCODING, answered under the line's request id."""
        self.assertWireError(b"TOPIC 7 #a :\xff\xfe", Code.BAD_ENCODING, "7")

    def test_nul_byte(self):
        """A NUL byte anywhere is BAD_SYNTAX."""
        self.assertWireError(b"PING 7 a\x00b", Code.BAD_SYNTAX, "7")

    def test_control_characters(self):
        """C0 controls, DEL, C1 controls and a lone CR are refused, even in text."""
        for line in [b"X 1 :a\x1bb", b"X 1 :a\x7f", "X 1 :a\u009bb".encode(), b"X 1 a\rb"]:
            self.assertWireError(line, Code.BAD_SYNTAX, "1")

    def test_empty_line(self):
        """An empty line is an error, not silently ignored."""
        self.assertWireError(b"", Code.BAD_SYNTAX)
        self.assertWireError(b"\r", Code.BAD_SYNTAX)

    def test_bad_verbs_and_ids(self):
        """Lower-case verbs, missing or malformed ids and stray spaces are BAD_SYNTAX."""
        self.assertWireError(b"ping 1", Code.BAD_SYNTAX, "1")
        self.assertWireError(b"PING", Code.BAD_SYNTAX)
        self.assertWireError(b"PING  1", Code.BAD_SYNTAX)
        self.assertWireError(b"PING a/b", Code.BAD_SYNTAX)
        self.assertWireError(b"PING " + b"x" * 33, Code.BAD_SYNTAX)
        self.assertWireError(b"PING 1 ", Code.BAD_SYNTAX, "1")
        self.assertWireError(b"PING 1 a  b", Code.BAD_SYNTAX, "1")
        self.assertWireError(b"PING 1 a ", Code.BAD_SYNTAX, "1")

    def test_non_ascii_token(self):
        """Non-ASCII text is only allowed in the ':' argument."""
        self.assertWireError("PING 1 caf\u00e9".encode(), Code.BAD_SYNTAX, "1")

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes(self, line):
        """Any bytes either parse or raise WireError: nothing else escapes."""
        try:
            frame = parse_line(line)
        except WireError as error:
            self.assertIn(error.code, set(Code))
        else:
            self.assertIsInstance(frame, Frame)


class EncodeFrameTests(SynchronousTestCase):
    def test_trailing_when_needed(self):
        """Only a last argument that needs it gets the ':' form."""
        self.assertEqual(encode_frame("OK", "1", "a", "b"), b"OK 1 a b")
        self.assertEqual(encode_frame("OK", "1", "a b"), b"OK 1 :a b")
        self.assertEqual(encode_frame("OK", "1", ""), b"OK 1 :")
        self.assertEqual(encode_frame("OK", "1", ":x"), b"OK 1 ::x")

    def test_refuses_unparseable(self):
        """A frame that would not parse back is a ValueError for the caller."""
        for verb, rid, args in [
            ("ok", "1", ()),
            ("OK", "a b", ()),
            ("OK", "1", ("a b", "c")),
            ("OK", "1", ("bell\x07",)),
        ]:
            self.assertRaises(ValueError, encode_frame, verb, rid, *args)

    @given(
        st.from_regex(r"\A[A-Z][A-Z0-9_]{0,15}\Z"),
        request_ids,
        st.lists(tokens.filter(lambda t: not t.startswith(":")), max_size=5),
        st.one_of(st.none(), texts),
    )
    def test_round_trip(self, verb, request_id, args, trailing):
        """parse_line(encode_frame(...)) gives back exactly the same frame."""
        args = tuple(args) + (() if trailing is None else (trailing,))
        line = encode_frame(verb, request_id, *args)
        self.assertEqual(parse_line(line), Frame(verb, request_id, args))


class Base64Tests(SynchronousTestCase):
    @given(st.binary(max_size=200))
    def test_round_trip(self, data):
        """Binary fields survive base64url, with or without padding."""
        encoded = b64encode(data)
        self.assertNotIn("=", encoded)
        self.assertEqual(b64decode(encoded), data)
        self.assertEqual(b64decode(encoded + "=" * (-len(encoded) % 4)), data)

    def test_rejects_other_alphabets(self):
        """Standard base64's + and /, stray characters and impossible lengths are refused."""
        for text in ["ab+c", "ab/c", "a", "ab=c", "a b", "abc==="]:
            self.assertRaises(ValueError, b64decode, text)


class VerbTests(SynchronousTestCase):
    verb = Verb(
        "SEND",
        (Param("room"), Param("seq", "int"), Param("token", "b64", 16), Param("note", "text", 10, optional=True)),
    )

    def bind(self, line):
        return self.verb.bind(parse_line(line))

    def test_typed_arguments(self):
        """Arguments come back converted: ints as int, base64 as bytes, missing optionals as None."""
        self.assertEqual(
            self.bind(b"SEND 3 #lab 12 aGk"),
            {"room": "#lab", "seq": 12, "token": b"hi", "note": None},
        )

    def test_wrong_count(self):
        """Too few or too many arguments is BAD_ARGUMENTS, with the usage."""
        for line in [b"SEND 3 #lab 12", b"SEND 3 #lab 12 aGk x y"]:
            with self.assertRaises(WireError) as caught:
                self.bind(line)
            self.assertEqual(caught.exception.code, Code.BAD_ARGUMENTS)
            self.assertEqual(caught.exception.request_id, "3")
            self.assertIn("SEND <id> <room> <seq> <token> [note]", caught.exception.text)

    def test_bad_values(self):
        """Bad integers, bad base64 and over-long values each get their code."""
        cases = [
            (b"SEND 3 #lab -1 aGk", Code.BAD_ARGUMENTS),
            (b"SEND 3 #lab 007 aGk", Code.BAD_ARGUMENTS),
            (b"SEND 3 #lab 99999999999999999999 aGk", Code.BAD_ARGUMENTS),
            (b"SEND 3 #lab 1 a!k", Code.BAD_BASE64),
            (b"SEND 3 #lab 1 " + b"QUFB" * 10, Code.BAD_ARGUMENTS),
            (b"SEND 3 #lab 1 aGk :far too long", Code.BAD_ARGUMENTS),
        ]
        for line, code in cases:
            with self.assertRaises(WireError) as caught:
                self.bind(line)
            self.assertEqual((caught.exception.code, caught.exception.request_id), (code, "3"))

    def test_ping_payload_is_bounded(self):
        """PING's optional payload is base64 and at most 64 bytes."""
        ping = CLIENT_VERBS["PING"]
        self.assertEqual(ping.bind(parse_line(b"PING 1")), {"payload": None})
        with self.assertRaises(WireError):
            ping.bind(parse_line(b"PING 1 " + b64encode(b"x" * 65).encode()))


class FastCheckTests(SynchronousTestCase):
    """The codec's C-speed checks say exactly what the grammar's regular expressions say."""

    @given(st.text(alphabet=st.characters(max_codepoint=0x2100), max_size=40))
    def test_token_and_control_checks_match_the_grammar(self, text):
        """_is_token is %x21-7E+ and _has_control is any C0, DEL or C1, on any string."""
        self.assertEqual(codec._is_token(text), re.fullmatch(r"[\x21-\x7e]+", text) is not None)
        self.assertEqual(codec._has_control(text),
                         re.search(r"[\x00-\x1f\x7f-\x9f]", text) is not None)

    @given(st.text(alphabet="AZaz09-_=+/ .\x00é", max_size=24))
    def test_base64url_alphabet_check_matches_the_grammar(self, text):
        """b64decode refuses exactly what is not base64url with at most two pads."""
        valid = re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text) is not None
        try:
            b64decode(text)
        except ValueError as error:
            self.assertTrue(not valid or "length" in str(error) or "padding" in str(error).lower(),
                            (text, error))
        else:
            self.assertTrue(valid, text)


class LineLimitTests(SynchronousTestCase):
    """One table of limits both ends obey: every line either side may send
    fits what the other accepts, at its worst case."""

    def test_every_server_line_fits_the_client_limit(self):
        """No line the server may send is longer than the client accepts."""
        for verb in SERVER_VERBS.values():
            self.assertLessEqual(verb.worst_case_line(), MAX_LINE_AUTHENTICATED, verb.name)

    def test_every_client_line_fits_the_server_limit(self):
        """No request a client may send is longer than the server accepts after
        login; those allowed before login fit the pre-login limit."""
        for verb in CLIENT_VERBS.values():
            self.assertLessEqual(verb.worst_case_line(), MAX_LINE_AUTHENTICATED, verb.name)
        for name in PRE_LOGIN_VERBS:
            self.assertLessEqual(CLIENT_VERBS[name].worst_case_line(), MAX_LINE_UNAUTHENTICATED,
                                 name)

    def test_the_token_takes_what_the_message_line_leaves(self):
        """The largest token makes the worst MESSAGE line exactly fit; one byte more would not."""
        message = SERVER_VERBS["MESSAGE"]
        self.assertLessEqual(message.worst_case_line(), MAX_LINE_AUTHENTICATED)
        bigger = Verb("MESSAGE", tuple(
            Param(p.name, p.kind, p.max_length + (p.name == "token")) for p in message.params))
        self.assertGreater(bigger.worst_case_line(), MAX_LINE_AUTHENTICATED)

    def test_largest_message_seals_within_the_token_limit(self):
        """A body of MAX_MESSAGE_BYTES, with the longest room name and the largest
        counters, seals to a token the grammar accepts; the limit leaves nothing unused."""
        header = MessageHeader("#" + "r" * 32, MAX_INT, MAX_INT, b"\xff" * 16)
        token, _ = seal(Fernet.generate_key(), identity("alice"), header,
                        "\u00e9" * (MAX_MESSAGE_BYTES // 2), MAX_INT,
                        LogPosition(MAX_INT, b"\xff" * 32))
        self.assertLessEqual(len(token), MAX_TOKEN_BYTES)
        self.assertEqual(largest_body(token_size(MAX_MESSAGE_BYTES)), MAX_MESSAGE_BYTES)
        self.assertGreater(token_size(MAX_MESSAGE_BYTES + 256), MAX_TOKEN_BYTES)

    def test_sync_names_as_many_rooms_as_a_user_may_join(self):
        """A SYNC naming MAX_SYNC_ROOMS rooms at their longest still parses."""
        positions = " ".join(f"#{n:032d}={MAX_INT}" for n in range(MAX_SYNC_ROOMS))
        line = encode_frame("SYNC", "x" * 32, positions)
        self.assertLessEqual(len(line), MAX_LINE_AUTHENTICATED)
        self.assertEqual(CLIENT_VERBS["SYNC"].bind(parse_line(line))["positions"], positions)

    def test_leading_values_of_a_broken_line(self):
        """What can still be read of a MESSAGE whose token is bad: room, seq and sender."""
        tokens = ["#lab", "41", "alice", "2", "7", "!!not-base64!!", "x", "1"]
        self.assertEqual(SERVER_VERBS["MESSAGE"].leading_values(tokens),
                         {"room": "#lab", "server_seq": 41, "sender": "alice", "epoch": 2,
                          "seq": 7})

    def test_protocol_document_lists_every_line_with_its_size(self):
        """docs/protocol.md's tables of line sizes are the grammar's, verb for verb."""
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "protocol.md")
        with open(path, encoding="utf-8") as f:
            text = f.read().split("### 2.1 Line sizes", 1)[1].split("## 3. Grammar", 1)[0]
        server, client = text.split("Lines from a client", 1)
        for verbs_, part in ((SERVER_VERBS, server), (CLIENT_VERBS, client)):
            listed = {m[1]: int(m[2].replace(",", ""))
                      for m in re.finditer(r"^\| `([A-Z_]+)` \| ([\d,]+) \|$", part, re.M)}
            self.assertEqual(listed, {n: v.worst_case_line() for n, v in verbs_.items()})

class AnnouncedLimitsTests(SynchronousTestCase):
    def test_round_trip(self):
        """The LIMITS argument reads back as the limits announced."""
        limits = AnnouncedLimits(2.5, 400, 65536, 48000, 32768, 1048576, 134217728)
        self.assertEqual(AnnouncedLimits.parse(limits.encode()), limits)

    def test_newer_names_are_skipped_and_budgets_default_to_none(self):
        """Unknown names from a newer server are ignored; a missing budget is none."""
        limits = AnnouncedLimits.parse(
            "lines_per_second=200 line_burst=400 max_line=65536 max_message_bytes=9 colour=red")
        self.assertEqual((limits.max_message_bytes, limits.store_bytes_per_day), (9, 0))

    def test_malformed_is_bad_arguments(self):
        """Malformed, negative, infinite or missing values are BAD_ARGUMENTS, never a crash."""
        base = "line_burst=400 max_line=65536 max_message_bytes=9"
        for text in ["junk", f"lines_per_second=x {base}", f"lines_per_second=-1 {base}",
                     f"lines_per_second=inf {base}", f"lines_per_second=nan {base}", base]:
            with self.assertRaises(WireError) as caught:
                AnnouncedLimits.parse(text)
            self.assertEqual(caught.exception.code, Code.BAD_ARGUMENTS)

