"""A room's signed, hash-chained log and the state every reader derives
from it: pure, shared by the server (which stores and orders the log) and
the clients (which check it and trust nothing else about a room)."""

from securechat.roomlog.entry import LogEntry, LogError, SignedEntry
from securechat.roomlog.state import RoomState, replay

__all__ = ["LogEntry", "LogError", "RoomState", "SignedEntry", "replay"]
