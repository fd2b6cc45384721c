# -*- test-case-name: tests.test_client_session -*-
"""Waiting for room keys: the wraps and (before the room logs) epoch records
the server sends, the requests for a key this client lacks, and what it
tells its user while it waits: a key requested, withheld, or asked for so
long without an answer that the server may be withholding it."""

from twisted.internet import defer
from twisted.internet.error import ConnectionLost

from securechat.client.state import LocalRoom
from securechat.constants import KEY_STALL_SECONDS
from securechat.crypto.roomkeys import RoomKeyError
from securechat.names import fold
from securechat.wire import WireError

KEY_PENDING_TEXT = "waiting for a room key from a member"


class KeyWaits:
    """Keys arriving and keys asked for, for one
    L{securechat.client.session.ClientSession}."""

    def __init__(self, session):
        self._session = session
        self._stall_calls: dict[str, object] = {}

    def connection_lost(self) -> None:
        for call in self._stall_calls.values():
            if call.active():
                call.cancel()
        self._stall_calls.clear()

    @defer.inlineCallbacks
    def on_epoch(self, room, epoch, rotator, record, signature):
        """A key epoch from before the room's log: its record, signed by its
        rotator, commits to its key (the log vouches for the ones after)."""
        session = self._session
        if session.keys.commitment(room, epoch) is not None:
            return
        identity = yield session.peers.identity_of(rotator)
        if identity is None:
            doubt = f"cannot check the epoch {epoch} record of {room}: {rotator}'s key is in doubt"
            session.emit("verification_failed", room=room, nick=rotator, reason=doubt,
                         message=doubt)
            return
        try:
            session.keys.add_record(room, epoch, record, signature, identity)
        except RoomKeyError as error:
            session.emit("verification_failed", room=room, nick=rotator, reason=str(error),
                         message=str(error))
            return
        session.save()
        self.usable(room)

    def on_key(self, room, epoch, wrapper, wrap):
        session = self._session
        if session.keys.key(room, epoch) is not None:
            return None
        try:
            usable = session.keys.add_wrap(session.identity, room, epoch, wrap)
        except RoomKeyError as error:
            session.emit("verification_failed", room=room, nick=wrapper, reason=str(error),
                         message=f"{wrapper}'s key for {room} is unusable: {error}")
            return None
        session.save()
        if not usable:
            # Its epoch's entry is not checked yet: the log brings it.
            return session.log_sync.fetch(room).addErrback(session.passing_failure)
        session.emit("key_received", room=room, epoch=epoch, by=wrapper)
        self.usable(room)
        return None

    def usable(self, room: str) -> None:
        session = self._session
        local = session.rooms.get(fold(room))
        if local is None:
            return
        local.key_requested = False
        local.key_wait_since = None
        stall = self._stall_calls.pop(fold(room), None)
        if stall is not None and stall.active():
            stall.cancel()
        session.reception.retry(local)
        session.sender.pump()

    def on_pending(self, room, epoch):
        session = self._session
        local = session.rooms.get(fold(room))
        if local is not None:
            if local.announced_pending == epoch:
                return
            local.announced_pending = epoch
        session.emit("key_pending", room=room, epoch=epoch, message=KEY_PENDING_TEXT)

    def on_withheld(self, room, epoch, by, code, text):
        session = self._session
        session.emit("key_withheld", room=room, epoch=epoch, by=by, code=code,
                     message=f"{by} will not share the key of {room}: {text or code}")

    def request(self, room_name: str) -> None:
        """Ask the members for the current key (once per connection), and say
        so if nobody answers for long."""
        session = self._session
        room = session.rooms.get(fold(room_name))
        if room is None or room.key_requested or session.protocol is None:
            return
        room.key_requested = True
        if room.key_wait_since is None:
            room.key_wait_since = session.clock.seconds()
        d = session.request("KEYREQ", room.name)
        d.addErrback(self._request_failed, room)
        if fold(room.name) not in self._stall_calls:
            waited = session.clock.seconds() - room.key_wait_since
            self._stall_calls[fold(room.name)] = session.clock.callLater(
                max(0.0, KEY_STALL_SECONDS - waited), self._stalled, room)

    def _request_failed(self, failure, room: LocalRoom) -> None:
        room.key_requested = False
        failure.trap(WireError, ConnectionLost)

    def _stalled(self, room: LocalRoom) -> None:
        session = self._session
        self._stall_calls.pop(fold(room.name), None)
        log_ = session.logs.get(room.name)
        if room.key_wait_since is None or log_ is None or fold(room.name) not in session.rooms:
            return
        if session.keys.key(room.name, log_.state.epoch) is not None:
            return
        minutes = max(1, round((session.clock.seconds() - room.key_wait_since) / 60))
        session.emit("key_stalled", room=room.name, minutes=minutes,
                     message=f"no member has answered for {minutes} minute"
                             f"{'s' if minutes > 1 else ''}; the server may be withholding "
                             f"your key of {room.name}")
