# -*- test-case-name: tests.test_client_session -*-
"""Sending: the outbox on the wire, within the send window, re-keying first
when the room needs it, and retrying what the server could not take yet."""

from twisted.internet.error import ConnectionLost

from securechat.client.outbox import OutboxEntry
from securechat.client.state import LocalRoom
from securechat.constants import ROTATE_AFTER_MESSAGES
from securechat.crypto.envelope import MessageHeader, seal
from securechat.crypto.roomkeys import FIRST_EPOCH
from securechat.names import fold
from securechat.wire import Code, WireError, b64encode

# Messages on the wire at once, unacknowledged; enough to keep a fast link
# busy, few enough that a rotation re-seals little.
SEND_WINDOW = 100

# Wait before resending a message the server could not take for a passing
# reason (an internal error, a full disk) when it did not say how long.
RETRY_SECONDS = 2.0

# A wait the server asks for longer than this is told to the user: the
# message is not lost, but it will not go out soon (a daily budget spent).
LONG_WAIT_SECONDS = 60.0

# A newcomer who wants to send in a room whose key has not reached them
# yet waits this long for a key holder to answer before making a new key
# itself: long enough for an online holder, short enough to feel prompt.
KEY_WAIT_SECONDS = 5.0


class SendPath:
    """Part of L{securechat.client.session.ClientSession}; see there for the state
    it uses."""

    def send_text(self, room_name: str, text: str) -> OutboxEntry:
        """Queue a message; refused at once (never queued) if it cannot be sent
        at all, above all if it is longer than the server stores."""
        room = self._room(room_name)
        problem = self.limits.check_message(text)
        if problem is not None:
            raise WireError(MESSAGE_TOO_LONG, problem)
        entry = self.outbox.add(room.name, text)
        self.save()
        self._pump()
        return entry

    def _pump(self) -> None:
        """Put waiting messages on the wire, as keys and the window allow."""
        if not self.live or self.outbox.in_flight() >= SEND_WINDOW:
            return
        blocked = set()
        for entry in self.outbox.waiting():
            if self.outbox.in_flight() >= SEND_WINDOW:
                return
            if entry.room_key in blocked:
                continue
            room = self.rooms.get(entry.room_key)
            if room is None:
                self.outbox.remove(entry)
                self._send_failed(entry, "NOT_MEMBER", f"you are not in {entry.room}")
                continue
            key = self.keys.key(room.name, room.epoch) if room.epoch >= FIRST_EPOCH else None
            if entry.room_key in self._rotating or key is None:
                blocked.add(entry.room_key)
                if key is None and entry.room_key not in self._rotating:
                    self._without_key(room)
                continue
            if room.epoch_load + self.outbox.in_flight() >= ROTATE_AFTER_MESSAGES:
                blocked.add(entry.room_key)
                if not self.outbox.in_flight():
                    self._start_rotation(room, f"key used for {ROTATE_AFTER_MESSAGES} messages")
                continue
            if not self._within_budget(entry):
                return
            room.key_wait_since = None
            self._transmit(entry, room, key)

    def _within_budget(self, entry: OutboxEntry) -> bool:
        """Spend the storage budget the message costs, or come back when it is there."""
        now = self.clock.seconds()
        if self.limits.take_message(entry.text, now):
            return True
        self._pump_later(self.limits.message_delay(entry.text, now))
        return False

    def _pump_later(self, delay: float) -> None:
        """Try the outbox again in C{delay} seconds (once, however often asked)."""
        if self._pump_call is not None and self._pump_call.active():
            if self._pump_call.getTime() <= self.clock.seconds() + delay:
                return
            self._pump_call.cancel()
        self._pump_call = self.clock.callLater(delay, self._pump)

    def _without_key(self, room: LocalRoom) -> None:
        """We want to send but hold no current key: get one, or make one."""
        if room.epoch < FIRST_EPOCH:
            self._start_rotation(room, "first key of the room")
            return
        self._check_key(room)
        if room.history != "joined":
            return
        waited = self.clock.seconds() - (room.key_wait_since or self.clock.seconds())
        if waited >= KEY_WAIT_SECONDS:
            self._start_rotation(room, "no key holder answered")
        elif fold(room.name) not in self._wait_calls:
            self._wait_calls[fold(room.name)] = self.clock.callLater(
                KEY_WAIT_SECONDS - waited, self._wait_over, fold(room.name))

    def _wait_over(self, key: str) -> None:
        del self._wait_calls[key]
        self._pump()

    def _start_rotation(self, room: LocalRoom, reason: str) -> None:
        self.rotate(room.name, reason).addErrback(self._rotation_failed, room)

    def _rotation_failed(self, failure, room: LocalRoom) -> None:
        if failure.check(ConnectionLost):
            return
        self.emit("error", code=getattr(failure.value, "code", "CLIENT"),
                  message=f"could not rotate the key of {room.name}: {failure.getErrorMessage()}")
        for entry in self.outbox.drop_room(room.name):
            self._send_failed(entry, "ROTATION_FAILED", failure.getErrorMessage())

    def _transmit(self, entry: OutboxEntry, room: LocalRoom, key: bytes) -> None:
        if entry.seq is None:
            entry.seq = room.next_seq
            room.next_seq += 1
            self.save()
        header = MessageHeader(room.name, room.epoch, entry.seq, entry.message_id)
        token, signature = seal(key, self.identity, header, entry.text,
                                int(self.clock.seconds()))
        self.outbox.sending(entry)
        entry.epoch = room.epoch
        d = self.request("MSG", room.name, str(room.epoch), str(entry.seq),
                         b64encode(entry.message_id), b64encode(token), b64encode(signature),
                         process=False)
        d.addCallbacks(self._acknowledged, self._refused, (entry, room), None, (entry, room))

    def _acknowledged(self, reply, entry: OutboxEntry, room: LocalRoom) -> None:
        verb, args = reply.final
        server_seq = args["server_seq"] if verb == "DUPLICATE" else int(args["a"])
        self.outbox.remove(entry)
        if entry.epoch == room.epoch:
            room.epoch_load += 1
        room.seen.append(entry.message_id.hex())
        own = room.senders.get(fold(self.nick))
        if not isinstance(own, dict):
            own = room.senders[fold(self.nick)] = {"first": entry.seq, "last": entry.seq,
                                                   "holes": []}
        own["last"] = max(own["last"], entry.seq)
        self.save()
        if entry.waited:
            self._waiting_told = None
        self.emit("sent", room=entry.room, text=entry.text, server_seq=server_seq, seq=entry.seq,
                  id=entry.message_id.hex())
        self._after_send()

    def _refused(self, failure, entry: OutboxEntry, room: LocalRoom) -> None:
        self.outbox.returned(entry)
        self.limits.give_back_message(entry.text)
        if failure.check(ConnectionLost):
            return
        error = failure.value
        code = getattr(error, "code", None)
        if code == Code.REKEY_REQUIRED:
            if entry.epoch == room.epoch:
                self._start_rotation(room, "the server requires a new key")
            else:
                self._pump()
        elif code == Code.STALE_EPOCH:
            self.request("EPOCHS", room.name, str(room.epoch + 1)).addCallback(
                lambda _: (self._check_key(room), self._pump())).addErrback(
                lambda f: f.trap(WireError, ConnectionLost))
        elif code in (Code.RATE_LIMITED, Code.INTERNAL, Code.STORAGE_FULL):
            # Transient on the server's side: the message stays and goes again.
            wait = error.retry_after or RETRY_SECONDS
            entry.waited = True
            self._tell_waiting(entry, code, error.text, wait)
            self._pump_later(wait)
        else:
            self.outbox.remove(entry)
            self._send_failed(entry, code or "CLIENT", failure.getErrorMessage())
            self._after_send()

    def _tell_waiting(self, entry: OutboxEntry, code: str, text: str, wait: float) -> None:
        """Say once per cause that messages wait, when they will for long or
        for a full disk: never a message that seems sent and is not."""
        if code != Code.STORAGE_FULL and wait < LONG_WAIT_SECONDS:
            return
        if self._waiting_told == code:
            return
        self._waiting_told = code
        when = f"in {_duration(wait)}" if code != Code.STORAGE_FULL else "when it has room"
        self.emit("send_waiting", room=entry.room, code=str(code),
                  message=f"the server cannot take messages now ({text}); yours wait in the "
                          f"outbox and go out {when}")

    def _send_failed(self, entry: OutboxEntry, code: str, text: str) -> None:
        self.failed_sends += 1
        self.save()
        self.emit("error", code=str(code), message=f"message to {entry.room} not sent: {text}",
                  room=entry.room, text=entry.text, id=entry.message_id.hex())
        self._after_send()

    def _after_send(self) -> None:
        if not len(self.outbox):
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        else:
            self._pump()



# The code a message too long to send is refused with, before anything leaves.
MESSAGE_TOO_LONG = "MESSAGE_TOO_LONG"


def _duration(seconds: float) -> str:
    """A wait as people say it: 45 s, 12 min, 3 h 20 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
