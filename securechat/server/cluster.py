# -*- test-case-name: tests.test_cluster -*-
"""Fan-out across several daemons that share one database.

Each daemon delivers to its own connections. What another daemon must know
travels as a small notice on a bus (Redis pub/sub in production): a line for
some users, "room R has messages up to seq N" (with that message's line),
"room R changed", "user U changed", and which users are online where. The database stays the only
source of truth: a notice says what to re-read, never what to believe, so a
lost notice (pub/sub is at-most-once) costs a delay, never a message. After
the bus reconnects, the service re-reads everything it holds.
"""

import json
import os

from twisted.internet import task
from twisted.logger import Logger
from zope.interface import Interface, implementer

from securechat.constants import PRESENCE_HEARTBEAT_SECONDS, PRESENCE_MISSED_HEARTBEATS
from securechat.server.fanout import IFanOut, LocalFanOut

log = Logger()

LINE, MESSAGE, ROOM, USER, PRESENCE = "line", "message", "room", "user", "presence"


class IClusterListener(Interface):
    """What the service does when another daemon tells it something."""

    def reload_room(room_id):
        """Re-read a room (members, keys, requests) from the database."""

    def reload_user(user_id):
        """Re-read an account from the database."""

    def message_arrived(room_id, server_seq, epoch, line):
        """Another daemon stored a message: deliver it here, after any before it."""

    def resync():
        """Re-read everything: notices may have been lost while the bus was down."""

    def daemon_gone():
        """Another daemon went quiet: its connections, and what it was asking them, are gone."""


def encode_notice(kind: str, body: dict, payload: bytes = b"") -> bytes:
    return json.dumps({"kind": kind, **body}).encode() + b"\n" + payload


def decode_notice(data: bytes) -> tuple[dict, bytes]:
    header, _, payload = data.partition(b"\n")
    return json.loads(header), payload


@implementer(IFanOut)
class ClusterFanOut:
    """This daemon's connections, plus notices to and from the other daemons.

    @param bus_factory: called with (on_notice, on_connected); returns an
        object with start(), publish(bytes) and stop(), like L{RedisBus}.
    """

    several_daemons = True

    def __init__(self, bus_factory, clock):
        self.local = LocalFanOut()
        self._clock = clock
        self._bus = bus_factory(self._received, self._connected)
        self._listener = None
        self.daemon_id = os.urandom(8).hex()
        # Other daemons' online users, by the daemon's bus id, and when last heard.
        self._remote: dict[str, tuple[set[int], float]] = {}
        self._heartbeat = task.LoopingCall(self._announce)
        self._heartbeat.clock = clock

    def start(self, listener):
        """Start listening to the other daemons; fires once the bus is up."""
        self._listener = listener
        return self._bus.start().addCallback(self._started)

    def _started(self, _) -> None:
        self._heartbeat.start(PRESENCE_HEARTBEAT_SECONDS, now=True)

    def stop(self):
        if self._heartbeat.running:
            self._heartbeat.stop()
        return self._bus.stop()

    # -- IFanOut -------------------------------------------------------------

    def attach(self, user_id: int, connection) -> None:
        self.local.attach(user_id, connection)

    def detach(self, user_id: int, connection) -> bool:
        return self.local.detach(user_id, connection)

    def connections(self, user_id: int) -> list:
        return self.local.connections(user_id)

    def publish(self, user_ids, line: bytes, exclude=None) -> None:
        user_ids = list(user_ids)
        self.local.publish(user_ids, line, exclude)
        self._send(LINE, {"users": user_ids}, line)

    def message_stored(self, room_id: int, server_seq: int, epoch: int, line: bytes) -> None:
        # The line rides along: the next in line needs no database read.
        self._send(MESSAGE, {"room": room_id, "seq": server_seq, "epoch": epoch}, line)

    def deliver_here(self, user_ids, line: bytes, exclude=None) -> None:
        self.local.publish(user_ids, line, exclude)

    def room_changed(self, room_id: int) -> None:
        """Others re-read the room; so does this daemon, after the change it
        made itself, in case another daemon's re-read crossed it."""
        self._send(ROOM, {"room": room_id})
        self._listener.reload_room(room_id)

    def user_changed(self, user_id: int) -> None:
        self._send(USER, {"user": user_id})
        self._listener.reload_user(user_id)

    def online(self, user_id: int) -> bool:
        return self.local.online(user_id) or any(
            user_id in users for users, _ in self._remote.values())

    def online_users(self) -> set[int]:
        online = self.local.online_users()
        for users, _ in self._remote.values():
            online |= users
        return online

    def online_here(self) -> set[int]:
        return self.local.online_users()

    # -- the bus -------------------------------------------------------------

    def _send(self, kind: str, body: dict, payload: bytes = b"") -> None:
        self._bus.publish(encode_notice(kind, body, payload))

    def _announce(self) -> None:
        """Say who is online here (also how others learn this daemon is alive),
        and forget daemons that went quiet."""
        self._send(PRESENCE, {"from": self.daemon_id, "users": sorted(self.local.online_users())})
        deadline = self._clock.seconds() - PRESENCE_HEARTBEAT_SECONDS * PRESENCE_MISSED_HEARTBEATS
        for daemon, (users, heard) in list(self._remote.items()):
            if heard < deadline:
                log.warn("daemon {daemon} went quiet; its {count} users count as offline",
                         daemon=daemon, count=len(users))
                del self._remote[daemon]
                self._listener.daemon_gone()

    def _connected(self, first: bool) -> None:
        if not first:
            log.info("the cross-daemon bus is back; re-reading the database")
            self._announce()
            self._listener.resync()

    def _received(self, data: bytes) -> None:
        try:
            notice, payload = decode_notice(data)
            self._apply(notice, payload)
        except Exception:
            log.failure("a notice from another daemon could not be applied")

    def _apply(self, notice: dict, payload: bytes) -> None:
        kind = notice["kind"]
        if kind == LINE:
            self.local.publish(notice["users"], payload)
        elif kind == MESSAGE:
            self._listener.message_arrived(notice["room"], notice["seq"], notice["epoch"], payload)
        elif kind == ROOM:
            self._listener.reload_room(notice["room"])
        elif kind == USER:
            self._listener.reload_user(notice["user"])
        elif kind == PRESENCE:
            self._remote[notice["from"]] = (set(notice["users"]), self._clock.seconds())
