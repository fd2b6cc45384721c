# -*- test-case-name: tests.test_client_session -*-
"""Sending: the outbox on the wire, within the send window, under a key
the room's log says is safe to use, and never a message silently gone.

Before a message is sealed its room must be ready: its log not forked, no
verified member's key changed behind the user's back, no removed member
holding the current key (the sender re-keys first), and the key in hand
(requested from a member, or made anew where the log allows). A message
the server refuses for good is reported with its text, to send again.
"""

from twisted.internet import defer
from twisted.internet.error import ConnectionLost

from securechat.client.outbox import Outbox, OutboxEntry
from securechat.client.state import LocalRoom
from securechat.constants import KEY_WAIT_SECONDS, ROTATE_AFTER_MESSAGES
from securechat.crypto.envelope import LogPosition, MessageHeader, seal
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


# The code a message too long to send is refused with, before anything leaves.
MESSAGE_TOO_LONG = "MESSAGE_TOO_LONG"


class Sender:
    """The outbox and the per-room message counters of one session.

    @ivar next_seqs: per room (folded name), the seq our next message takes.
        Kept across a part and a rejoin: the server refuses a seq used before.
    """

    def __init__(self, session, outbox: Outbox, next_seqs: dict[str, int]):
        self._session = session
        self.outbox = outbox
        self.next_seqs = next_seqs
        self.failed = 0
        self._idle_waiters = []
        self._pump_call = None
        self._wait_calls: dict = {}
        # The cause of waiting messages the user was told of, until one is sent.
        self._waiting_told: str | None = None
        # Rooms whose messages wait for the user's decision, as told (once each).
        self._held_told: dict[str, tuple] = {}

    def to_saved(self) -> dict:
        return {"outbox": self.outbox.to_list(), "next_seqs": dict(self.next_seqs)}

    def floor_seq(self, room: str, next_seq: int) -> None:
        """The server's count of our messages in C{room}: never reuse one below it."""
        key = fold(room)
        if next_seq > self.next_seqs.get(key, 1):
            self.next_seqs[key] = next_seq
            self._session.save()

    def when_idle(self) -> defer.Deferred:
        """Fire once every queued message has been acknowledged or has failed."""
        if not len(self.outbox):
            return defer.succeed(None)
        d = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def connection_lost(self) -> None:
        self.outbox.connection_lost()
        for call in self._wait_calls.values():
            call.cancel()
        self._wait_calls.clear()

    # -- queueing ---------------------------------------------------------------------

    def send_text(self, room_name: str, text: str) -> OutboxEntry:
        """Queue a message; refused at once (never queued) if it cannot be sent
        at all, above all if it is longer than the server stores."""
        session = self._session
        room = session.room(room_name)
        problem = session.limits.check_message(text)
        if problem is not None:
            raise WireError(MESSAGE_TOO_LONG, problem)
        forked = session.log_sync.forked(room.name)
        if forked is not None:
            raise forked
        entry = self.outbox.add(room.name, text)
        session.save()
        self.pump()
        return entry

    def pump(self) -> None:
        """Put waiting messages on the wire, as keys and the window allow."""
        session = self._session
        if not session.live or self.outbox.in_flight() >= SEND_WINDOW:
            return
        ready: dict[str, tuple | None] = {}
        for entry in self.outbox.waiting():
            if self.outbox.in_flight() >= SEND_WINDOW:
                return
            room = session.rooms.get(entry.room_key)
            if room is None:
                self.outbox.remove(entry)
                self.failed_to_send(entry, Code.NOT_MEMBER, f"you are not in {entry.room}")
                continue
            if entry.room_key not in ready:
                ready[entry.room_key] = self._ready(room)
            if ready[entry.room_key] is None:
                continue
            epoch, key = ready[entry.room_key]
            if room.epoch_load + self.outbox.in_flight() >= ROTATE_AFTER_MESSAGES:
                ready[entry.room_key] = None
                if not self.outbox.in_flight():
                    session.rotator.start(room.name,
                                          f"key used for {ROTATE_AFTER_MESSAGES} messages",
                                          automatic=False)
                continue
            if not self._within_budget(entry):
                return
            room.key_wait_since = None
            self._transmit(entry, room, epoch, key)

    def _ready(self, room: LocalRoom) -> tuple[int, bytes] | None:
        """The epoch and key to seal C{room}'s messages with now, or None after
        starting whatever makes it ready (a fetch, a rotation, a key request)."""
        session = self._session
        log_ = session.logs.get(room.name)
        forked = session.log_sync.forked(room.name)
        if forked is not None:
            for entry in self.outbox.drop_room(room.name):
                self.failed_to_send(entry, forked.code, forked.text)
            return None
        if log_ is None or not log_.length or log_.length < room.log_length:
            session.log_sync.fetch(room.name).addErrback(session.passing_failure)
            session.ensure_log(room.name)
            return None
        state = log_.state
        if session.identity.fingerprint not in state.members:
            return None
        holding_up = session.peers.holding_up(state)
        if holding_up:
            self._hold(room, "verified_changed", holding_up)
            return None
        self._held_told.pop(fold(room.name), None)
        if room.name in session.rotator:
            return None
        reason = session.rotator.needed(state)
        if reason is not None:
            session.rotator.start(room.name, reason)
            return None
        session.rotator.share_missing(room.name, state)
        key = session.keys.key(room.name, state.epoch)
        if key is None:
            self._without_key(room, state)
            return None
        return state.epoch, key

    def _hold(self, room: LocalRoom, why: str, nicks: list[str]) -> None:
        """Messages wait for the user's decision: say so once per cause."""
        told = (why, tuple(nicks))
        if self._held_told.get(fold(room.name)) == told:
            return
        self._held_told[fold(room.name)] = told
        names = ", ".join(nicks)
        self._session.emit(
            "send_held", room=room.name, nicks=nicks,
            message=f"messages to {room.name} wait: the key of {names}, whom you verified, "
                    f"changed. /verify {nicks[0]} to compare the new safety number; then "
                    f"/verify {nicks[0]} yes (or /accept {nicks[0]}) to go on, or /kick "
                    f"{nicks[0]}")

    def _without_key(self, room: LocalRoom, state) -> None:
        """We want to send but hold no current key: ask for it, and where the log
        allows and nobody answers, make a new one."""
        session = self._session
        session.keywaits.request(room.name)
        me = session.identity.fingerprint
        info = state.current()
        holders = set(state.holders.get(state.epoch, ())) & set(state.members)
        if not holders - {me}:
            # Nobody who is still a member holds it: a new key is the only way.
            session.rotator.start(room.name, "no member holds the current key")
            return
        since = session.member_since(state)
        if state.history != "joined" or info.index > since or me in holders:
            # Our key was made for us (the server owes us its wrap), is shared
            # to us in turn, or was made without us on purpose: only an answer helps.
            return
        waited = session.clock.seconds() - (room.key_wait_since or session.clock.seconds())
        if waited >= KEY_WAIT_SECONDS:
            session.rotator.start(room.name, "no key holder answered")
        elif fold(room.name) not in self._wait_calls:
            self._wait_calls[fold(room.name)] = session.clock.callLater(
                KEY_WAIT_SECONDS - waited, self._wait_over, fold(room.name))

    def _wait_over(self, key: str) -> None:
        del self._wait_calls[key]
        self.pump()

    def _within_budget(self, entry: OutboxEntry) -> bool:
        """Spend the storage budget the message costs, or come back when it is there."""
        limits, now = self._session.limits, self._session.clock.seconds()
        if limits.take_message(entry.text, now):
            return True
        self.pump_later(limits.message_delay(entry.text, now))
        return False

    def pump_later(self, delay: float) -> None:
        """Try the outbox again in C{delay} seconds (once, however often asked)."""
        clock = self._session.clock
        if self._pump_call is not None and self._pump_call.active():
            if self._pump_call.getTime() <= clock.seconds() + delay:
                return
            self._pump_call.cancel()
        self._pump_call = clock.callLater(delay, self.pump)

    # -- on the wire -------------------------------------------------------------------

    def _transmit(self, entry: OutboxEntry, room: LocalRoom, epoch: int, key: bytes) -> None:
        session = self._session
        if entry.seq is None:
            entry.seq = self.next_seqs.get(entry.room_key, 1)
            self.next_seqs[entry.room_key] = entry.seq + 1
            session.save()
        log_ = session.logs.get(room.name)
        header = MessageHeader(room.name, epoch, entry.seq, entry.message_id)
        token, signature = seal(key, session.identity, header, entry.text,
                                int(session.clock.seconds()),
                                LogPosition(log_.length, log_.state.head))
        self.outbox.sending(entry)
        entry.epoch = epoch
        d = session.request("MSG", room.name, str(epoch), str(entry.seq),
                            b64encode(entry.message_id), b64encode(token), b64encode(signature),
                            process=False)
        d.addCallbacks(self._acknowledged, self._refused, (entry, room), None, (entry, room))

    def _acknowledged(self, reply, entry: OutboxEntry, room: LocalRoom) -> None:
        session = self._session
        verb, args = reply.final
        server_seq = args["server_seq"] if verb == "DUPLICATE" else int(args["a"])
        self.outbox.remove(entry)
        if entry.epoch == room.epoch:
            room.epoch_load += 1
        room.seen.append(entry.message_id.hex())
        own = room.senders.get(fold(session.nick))
        if not isinstance(own, dict):
            own = room.senders[fold(session.nick)] = {"first": entry.seq, "last": entry.seq,
                                                      "holes": []}
        own["last"] = max(own["last"], entry.seq)
        session.save()
        if entry.waited:
            self._waiting_told = None
        session.emit("sent", room=entry.room, text=entry.text, server_seq=server_seq,
                     seq=entry.seq, id=entry.message_id.hex())
        self._after_send()

    def _refused(self, failure, entry: OutboxEntry, room: LocalRoom) -> None:
        session = self._session
        self.outbox.returned(entry)
        session.limits.give_back_message(entry.text)
        if failure.check(ConnectionLost):
            return
        error = failure.value
        code = getattr(error, "code", None)
        if code == Code.REKEY_REQUIRED:
            if entry.epoch == room.epoch:
                session.rotator.start(room.name, "the server requires a new key",
                                      automatic=False)
            else:
                self.pump()
        elif code == Code.STALE_EPOCH:
            # A newer epoch exists: its entry is on the way, or the log is fetched.
            session.log_sync.fetch(room.name).addCallback(lambda _: self.pump()).addErrback(
                session.passing_failure)
        elif code == Code.SEQ_REUSED:
            # The server holds another message of ours under this seq (state lost,
            # or from before a rejoin): the same message goes again under a new one.
            self.next_seqs[entry.room_key] = max(self.next_seqs.get(entry.room_key, 1),
                                                 entry.seq + 1)
            entry.seq = None
            session.save()
            self.pump()
        elif code in (Code.RATE_LIMITED, Code.INTERNAL, Code.STORAGE_FULL):
            # Transient on the server's side: the message stays and goes again.
            wait = error.retry_after or RETRY_SECONDS
            entry.waited = True
            self._tell_waiting(entry, code, error.text, wait)
            self.pump_later(wait)
        else:
            self.outbox.remove(entry)
            self.failed_to_send(entry, code or "CLIENT", failure.getErrorMessage())

    def _tell_waiting(self, entry: OutboxEntry, code: str, text: str, wait: float) -> None:
        """Say once per cause that messages wait, when they will for long or
        for a full disk: never a message that seems sent and is not."""
        if code != Code.STORAGE_FULL and wait < LONG_WAIT_SECONDS:
            return
        if self._waiting_told == code:
            return
        self._waiting_told = code
        when = f"in {_duration(wait)}" if code != Code.STORAGE_FULL else "when it has room"
        self._session.emit("send_waiting", room=entry.room, code=str(code),
                           message=f"the server cannot take messages now ({text}); yours wait "
                                   f"in the outbox and go out {when}")

    def failed_to_send(self, entry: OutboxEntry, code: str, text: str) -> None:
        """A message that will not go out: the user sees it, with its text, to resend."""
        self.failed += 1
        self._session.save()
        self._session.emit("error", code=str(code),
                           message=f"message to {entry.room} not sent: {text}",
                           room=entry.room, text=entry.text, id=entry.message_id.hex())
        self._after_send()

    def drop_room(self, room: str, why: str) -> None:
        for entry in self.outbox.drop_room(room):
            self.failed_to_send(entry, Code.NOT_MEMBER, why)

    def _after_send(self) -> None:
        if not len(self.outbox):
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        else:
            self.pump()


def _duration(seconds: float) -> str:
    """A wait as people say it: 45 s, 12 min, 3 h 20 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
