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
    # flow control and liveness
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    LOGIN_TIMEOUT = "LOGIN_TIMEOUT"
    PING_TIMEOUT = "PING_TIMEOUT"
    # accounts and login
    AUTH_REQUIRED = "AUTH_REQUIRED"
    AUTH_FAILED = "AUTH_FAILED"
    ALREADY_AUTHENTICATED = "ALREADY_AUTHENTICATED"
    BAD_NAME = "BAD_NAME"
    NICK_TAKEN = "NICK_TAKEN"
    KEY_IN_USE = "KEY_IN_USE"
    BAD_KEY = "BAD_KEY"
    REGISTRATION_CLOSED = "REGISTRATION_CLOSED"
    BAD_REGISTRATION_TOKEN = "BAD_REGISTRATION_TOKEN"
    ACCOUNT_BANNED = "ACCOUNT_BANNED"
    ACCOUNT_RESET = "ACCOUNT_RESET"
    NO_SUCH_USER = "NO_SUCH_USER"
    # rooms
    NO_SUCH_ROOM = "NO_SUCH_ROOM"
    NOT_MEMBER = "NOT_MEMBER"
    NOT_ALLOWED = "NOT_ALLOWED"
    BANNED = "BANNED"
    INVITE_ONLY = "INVITE_ONLY"
    BAD_PASSWORD = "BAD_PASSWORD"
    ROOM_FULL = "ROOM_FULL"
    TOO_MANY_ROOMS = "TOO_MANY_ROOMS"
    # messages and keys
    REKEY_REQUIRED = "REKEY_REQUIRED"
    STALE_EPOCH = "STALE_EPOCH"
    NO_EPOCH = "NO_EPOCH"
    SEQ_REUSED = "SEQ_REUSED"
    NO_SUCH_REQUEST = "NO_SUCH_REQUEST"
    # room logs
    LOG_CONFLICT = "LOG_CONFLICT"
    BAD_ENTRY = "BAD_ENTRY"
    NO_LOG = "NO_LOG"
    WRAPS_MISSING = "WRAPS_MISSING"
    # storage
    STORAGE_FULL = "STORAGE_FULL"


# The request id used when a line is too broken to carry one.
NO_REQUEST_ID = "*"


class WireError(Exception):
    """A request that is answered with ``ERROR <id> <code> :<text>``.

    Raised anywhere below a protocol's dispatcher; the dispatcher alone turns
    it into a reply, so handlers never format error lines themselves.

    @ivar retry_after: seconds after which the same request may succeed (a
        rate limit's wait), or None; sent as a ``RETRY`` line first.
    """

    def __init__(self, code: Code, text: str, request_id: str = NO_REQUEST_ID,
                 retry_after: float | None = None):
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.request_id = request_id
        self.retry_after = retry_after

    def with_request_id(self, request_id: str) -> "WireError":
        """The same error, answered under C{request_id}."""
        return WireError(self.code, self.text, request_id, self.retry_after)
