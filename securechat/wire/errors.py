"""Stable error codes and the one exception type that carries them.

A code is part of the protocol: clients and scripts branch on it, so a code
is never renamed or reused. docs/protocol.md lists each with its meaning.
"""

import enum


class Code(enum.StrEnum):
    """Every code an ``ERROR`` line may carry."""

    # framing and grammar
    BAD_SYNTAX = "BAD_SYNTAX"
    BAD_ENCODING = "BAD_ENCODING"
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    BAD_ARGUMENTS = "BAD_ARGUMENTS"
    BAD_BASE64 = "BAD_BASE64"
    TOO_LONG = "TOO_LONG"
    # the server failed; the request may be retried
    INTERNAL = "INTERNAL"


# The request id used when a line is too broken to carry one.
NO_REQUEST_ID = "*"


class WireError(Exception):
    """A request that is answered with ``ERROR <id> <code> :<text>``.

    Raised anywhere below a protocol's dispatcher; the dispatcher alone turns
    it into a reply, so handlers never format error lines themselves.
    """

    def __init__(self, code: Code, text: str, request_id: str = NO_REQUEST_ID):
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.request_id = request_id

    def with_request_id(self, request_id: str) -> "WireError":
        """The same error, answered under C{request_id}."""
        return WireError(self.code, self.text, request_id)
