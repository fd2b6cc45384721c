# -*- test-case-name: tests.test_client_session -*-
"""The headless client: login, sync, the rooms, and events for a UI.

A UI (the console, a bot, the batch runner, the benchmark load generator)
subscribes to L{ClientEvent}s and calls the command methods; it never sees
a line of the protocol. The session's promise to its user: every message
they are entitled to is shown; one that cannot be shown yet or ever comes
with a notice saying why; keys that are missing are fetched or requested
automatically, and waiting messages decrypt the moment their key arrives.

The session wires its parts and owns the connection; each part owns its
state: the room logs and their checking (L{LogSync}, L{RoomLogs}), the
people and their keys (L{Peers}), epochs and hand-overs (L{Rotator}),
incoming messages (L{Reception}) and the outbox (L{Sender}).
"""

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from securechat.client.keyring import RoomKeyring
from securechat.client.keywait import KeyWaits
from securechat.client.limits import ServerLimits
from securechat.client.logclient import LogSync
from securechat.client.membership import Membership
from securechat.client.outbox import Outbox
from securechat.client.peers import Peers
from securechat.client.pins import PinStore
from securechat.client.receiving import Reception
from securechat.client.roomlog import RoomLogs
from securechat.client.rotation import Rotator
from securechat.client.sending import Sender
from securechat.client.state import ClientEvent, LocalRoom
from securechat.client.upgrade import LegacyRooms
from securechat.constants import PROTOCOL_NAME, PROTOCOL_VERSION
from securechat.crypto.identity import PrivateIdentity, login_signature
from securechat.names import fold
from securechat.roomlog import author
from securechat.wire import Code, WireError, b64encode
from securechat.wire.limits import AnnouncedLimits

log = Logger()

# Rooms left whose seen messages are kept, for a rejoin: the newest this many.
LEFT_ROOMS_KEPT = 64



# Lines from the server handled by a part of the session: verb to the part
# (an attribute of the session) and its method.
_ROUTES = {
    "EPOCH": ("keywaits", "on_epoch"),
    "KEY": ("keywaits", "on_key"),
    "PENDING": ("keywaits", "on_pending"),
    "WITHHELD": ("keywaits", "on_withheld"),
    "WRAPREQ": ("rotator", "answer"),
}


class ClientSession:
    """One user's view of one server, across reconnections.

    @param save: called with the state dict whenever it changed.
    @param channel_binding: the TLS exporter of a connection (see
        L{securechat.lineprotocol.tls_exporter}).
    @param share_with_verified_only: hand room keys only to members whose
        safety number the user has verified.
    """

    def __init__(self, identity: PrivateIdentity, nick: str, state: dict, clock, save,
                 channel_binding, share_with_verified_only: bool = False,
                 registration_token: str | None = None):
        self.identity = identity
        self.nick = state.get("nick", nick)
        self.clock = clock
        self._save_state = save
        self._binding = channel_binding
        self.registration_token = registration_token
        self.registered = state.get("registered", False)
        self.peers = Peers(self, PinStore(state.get("pins")), share_with_verified_only)
        self.keys = RoomKeyring(state.get("keyring"))
        self.logs = RoomLogs(state.get("logs"))
        self.rooms = {fold(r["name"]): LocalRoom.from_dict(r) for r in state.get("rooms", [])}
        # What was seen in rooms the user left (folded name to the saved room):
        # a rejoin of a room sharing its history shows nothing twice.
        self._left: dict[str, dict] = {fold(r["name"]): r for r in state.get("left_rooms", [])}
        next_seqs = dict(state.get("next_seqs", {}))
        for saved in state.get("rooms", []):
            # A state from before the logs kept each room's counter in the room.
            next_seqs.setdefault(fold(saved["name"]), saved.get("next_seq", 1))
        self.sender = Sender(self, Outbox(state.get("outbox")), next_seqs)
        self.reception = Reception(self)
        self.log_sync = LogSync(self)
        self.rotator = Rotator(self)
        self.legacy = LegacyRooms(self)
        self.keywaits = KeyWaits(self)
        self.membership = Membership(self, state.get("parts_waiting", []))
        self.limits = ServerLimits(state.get("server_limits"))
        self.protocol = None
        self.live = False
        self.server_name = None
        self._subscribers = []
        self._queue: list = []
        self._drain_call = None
        self._save_call = None
        self._live_waiters: list[defer.Deferred] = []

    # -- what UIs use -------------------------------------------------------------

    @property
    def outbox(self) -> Outbox:
        return self.sender.outbox

    @property
    def pins(self) -> PinStore:
        return self.peers.pins

    @property
    def failed_sends(self) -> int:
        return self.sender.failed

    @property
    def verified_only(self) -> bool:
        return self.peers.verified_only

    def subscribe(self, callback) -> None:
        self._subscribers.append(callback)

    def emit(self, kind: str, **fields) -> None:
        event = ClientEvent(kind, fields)
        for callback in list(self._subscribers):
            callback(event)

    def state(self) -> dict:
        return {
            "nick": self.nick,
            "registered": self.registered,
            "pins": self.pins.to_dict(),
            "keyring": self.keys.to_dict(),
            "logs": self.logs.to_dict(),
            "rooms": [r.to_dict() for r in self.rooms.values()],
            "left_rooms": list(self._left.values()),
            **self.sender.to_saved(),
            "server_limits": self.limits.to_saved(),
            "parts_waiting": sorted(self.membership.parts_waiting.values()),
        }

    def save(self) -> None:
        """Save soon; several changes in one turn are written once."""
        if self._save_call is None:
            self._save_call = self.clock.callLater(0, self.save_now)

    def save_now(self) -> None:
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        self._save_state(self.state())

    def when_live(self) -> defer.Deferred:
        if self.live:
            return defer.succeed(self)
        d = defer.Deferred()
        self._live_waiters.append(d)
        return d

    def when_idle(self) -> defer.Deferred:
        """Fire once every queued message has been acknowledged or has failed."""
        return self.sender.when_idle()

    def room(self, name: str) -> LocalRoom:
        """The room the user is in by that name. @raise WireError: they are not."""
        room = self.rooms.get(fold(name))
        if room is None:
            raise WireError(Code.NOT_MEMBER, f"you are not in {name}; /join it first")
        return room

    # -- connection ------------------------------------------------------------

    def connection_made(self, protocol) -> None:
        self.protocol = protocol

    def connection_lost(self, protocol, reason) -> None:
        if protocol is not self.protocol:
            return
        self.protocol = None
        self.live = False
        self.limits.stop()
        queued, self._queue = self._queue, []
        for _, _, _, d in queued:
            d.errback(ConnectionLost("disconnected before sending"))
        if self._drain_call is not None:
            self._drain_call.cancel()
        self._drain_call = None
        self.sender.connection_lost()
        self.rotator.cancel()
        self.keywaits.connection_lost()
        for room in self.rooms.values():
            room.key_requested = False
        self.emit("disconnected", reason=reason.getErrorMessage())

    def server_fault(self, text: str) -> None:
        self.emit("error", code="PROTOCOL", message=text)

    def server_error(self, code: str, text: str) -> None:
        self.emit("error", code=code, message=text, unprompted=True)

    def unreadable_line(self, unreadable) -> None:
        self.reception.unreadable_line(unreadable)

    def _fatal(self, code: str, text: str) -> None:
        self.emit("fatal", code=code, message=text)
        if self.protocol is not None:
            self.protocol.transport.loseConnection()

    # -- requests, paced ---------------------------------------------------------

    def request(self, verb: str, *args: str, process: bool = True) -> defer.Deferred:
        """Send a request within the server's rate limit; fire with its Reply."""
        if self.protocol is None:
            return defer.fail(ConnectionLost("not connected"))
        if not self.limits.pacing:
            return self.protocol.request(verb, *args, process=process)
        d = defer.Deferred()
        self._queue.append((verb, args, process, d))
        self._drain_requests()
        return d

    def _drain_requests(self) -> None:
        now = self.clock.seconds()
        while self._queue and self.limits.take_line(now):
            verb, args, process, d = self._queue.pop(0)
            self.protocol.request(verb, *args, process=process).chainDeferred(d)
        if self._queue and self._drain_call is None:
            self._drain_call = self.clock.callLater(self.limits.line_delay(now),
                                                    self._drain_timer)

    def _drain_timer(self) -> None:
        self._drain_call = None
        self._drain_requests()

    @defer.inlineCallbacks
    def paged(self, verb: str, *args: str):
        """Every data line of a request the server answers a page at a time (WHO,
        LIST): asked again after the key its OK names, until one names none. A
        server that names the same key again cannot keep us asking."""
        lines, after = [], None
        while True:
            reply = yield self.request(verb, *args, *([after] if after else []), process=False)
            lines.extend(reply.lines)
            following = reply.final[1].get("b")
            if not following or following == after:
                return lines
            after = following

    def passing_failure(self, failure) -> None:
        """A background step failed for a reason the next event retries
        (a refusal, a lost connection): nothing to tell."""
        failure.trap(WireError, ConnectionLost)

    def event_failed(self, failure, what: str) -> None:
        if failure.check(ConnectionLost):
            return
        log.failure("handling {what} from the server", failure, what=what)
        self.emit("error", code="CLIENT",
                  message=f"could not handle {what}: {failure.getErrorMessage()}")

    # -- login and sync ---------------------------------------------------------

    def server_event(self, verb: str, args: dict, pushed: bool = True) -> None:
        """A line from the server: pushed as it happened, or part of a reply."""
        if verb == "MESSAGE":
            self.reception.on_message(live=pushed and self.live, **args)
            return
        part, method = _ROUTES.get(verb, (None, "_on_" + verb.lower()))
        handler = getattr(getattr(self, part) if part else self, method, None)
        if handler is None:
            log.warn("no handling for server line {verb}", verb=verb)
            return
        result = handler(**args)
        if isinstance(result, defer.Deferred):
            result.addErrback(self.event_failed, verb)

    @defer.inlineCallbacks
    def _on_hello(self, protocol, version, server, nonce, text):
        if protocol != PROTOCOL_NAME or version != PROTOCOL_VERSION:
            self._fatal("PROTOCOL", f"the server speaks {protocol} {version}, not "
                                    f"{PROTOCOL_NAME} {PROTOCOL_VERSION}: "
                                    + ("upgrade this client" if version > PROTOCOL_VERSION
                                       else "ask its operator to upgrade it"))
            return
        self.server_name = server
        signature = b64encode(login_signature(self.identity, server, self.nick, nonce,
                                              self._binding(self.protocol.transport)))
        public = self.identity.public
        try:
            if self.registered:
                reply = yield self.request("LOGIN", self.nick, signature)
            else:
                reply = yield self.request(
                    "REGISTER", self.nick, b64encode(public.sign_der), b64encode(public.enc_der),
                    b64encode(public.enc_signature), signature,
                    *([self.registration_token] if self.registration_token else []),
                )
                self.registered = True
                self.save()
        except WireError as error:
            self._fatal(error.code, error.text)
            return
        announced = [args["limits"] for verb, args in reply.lines if verb == "LIMITS"]
        if not announced:
            self._fatal("PROTOCOL", "the server announced no limits at login; it is older "
                                    "than this client: ask its operator to upgrade it")
            return
        try:
            self.limits.start(AnnouncedLimits.parse(announced[-1]), self.clock.seconds())
        except WireError as error:
            self._fatal("PROTOCOL", f"the server's limits cannot be read: {error.text}")
            return
        self.save()
        self.emit("connected", nick=self.nick, server=server)
        yield self.membership.send_waiting_parts()
        yield self._sync()

    @defer.inlineCallbacks
    def _sync(self):
        known = set(self.rooms)
        positions = " ".join(f"{r.name}={r.position()}" for r in self.rooms.values())
        reply = yield self.request("SYNC", positions)
        listed = {fold(args["room"]) for verb, args in reply.lines
                  if verb == "ROOM" and fold(args["room"]) not in self.membership.parts_waiting}
        for gone in known - listed:
            self.emit("left", room=self.rooms[gone].name, how="removed while offline", by="",
                      reason="")
            self.drop_room(gone)
        for room in list(self.rooms.values()):
            try:
                yield self._catch_up_log(room)
            except WireError as error:
                self.emit("error", code=str(error.code),
                          message=f"could not bring {room.name} up to date: {error.text}")
        for verb, args in reply.lines:
            if verb == "MORE":
                yield self.catch_up(args["room"], args["after"])
        self.live = True
        waiters, self._live_waiters = self._live_waiters, []
        for waiter in waiters:
            waiter.callback(self)
        self.emit("synced", rooms=sorted(r.name for r in self.rooms.values()))
        for room in list(self.rooms.values()):
            self._after_sync(room)
        self.sender.pump()

    @defer.inlineCallbacks
    def _catch_up_log(self, room: LocalRoom):
        """A room's log up to what the server has, and its own entries owed:
        the move of a room from before the logs, or our new key after a reset."""
        log_ = yield self.log_sync.fetch(room.name)
        if not log_.length or self.legacy.admitting(log_.state):
            yield self.legacy.upgrade(room)
            return
        state = log_.state
        me = self.identity.fingerprint
        if me not in state.members and state.by_nick(self.nick) is not None:
            old = state.by_nick(self.nick)
            yield self.log_sync.append(room.name, lambda s: None if me in s.members
                                       or s.by_nick(self.nick) != old else author.rekey(
                                           self.identity, s, old, self.nick,
                                           self.clock.seconds()))

    def _after_sync(self, room: LocalRoom) -> None:
        log_ = self.logs.get(room.name)
        if log_ is None or not log_.length:
            return
        state = log_.state
        self.epoch_arrived(room.name)
        if state.epoch and self.keys.key(room.name, state.epoch) is None \
                and self.identity.fingerprint in state.members:
            self.keywaits.request(room.name)
        if self.rotator.needed(state):
            self.rotator.removal_seen(room.name, state, None)

    @defer.inlineCallbacks
    def catch_up(self, room: str, after: int):
        """Page through a room's messages after C{after}, each page shown as it
        comes; over when a page brings nothing new (a server that repeats a
        page, or sends only lines we cannot read, cannot keep us asking)."""
        while True:
            reply = yield self.request("HISTORY", room, "after", str(after), "500")
            seqs = [args["server_seq"] for verb, args in reply.lines if verb == "MESSAGE"]
            seqs += [u.fields["server_seq"] for u in reply.unreadable if "server_seq" in u.fields]
            if not seqs or max(seqs) <= after:
                return
            after = max(seqs)

    # -- what the server pushes ---------------------------------------------------

    def _on_room(self, room, role, epoch, last_seq, flags, members, log_length, next_seq,
                 topic):
        if fold(room) in self.membership.parts_waiting:
            return
        local = self.rooms.get(fold(room))
        if local is None:
            left = self._left.pop(fold(room), None)
            local = self.rooms[fold(room)] = LocalRoom.from_dict(left) if left else \
                LocalRoom(room)
            for sender in local.senders.values():
                # What each sent while we were away is not missing: no gap for it.
                sender["resume"] = True
        local.name, local.role, local.topic, local.members = room, role, topic, members
        local.flags = set(flags.split(","))
        local.log_length = max(local.log_length, log_length)
        local.epoch = max(local.epoch, epoch)
        self.sender.floor_seq(room, next_seq)
        if self.logs.get(room) is not None and self.logs.get(room).length:
            # The server's word is for rooms without a log yet (their upgrade).
            self.log_changed(room)

    def _on_entry(self, room, index, entry, signature):
        local = self.rooms.get(fold(room))
        if local is not None:
            local.log_length = max(local.log_length, index + 1)
        return self.log_sync.on_entry(room, index, entry, signature)

    def _on_topic(self, room, by, topic):
        if fold(room) in self.rooms:
            self.rooms[fold(room)].topic = topic
        self.emit("topic", room=room, by=by, topic=topic)

    def _on_settings(self, room, by, flags):
        """The server's own settings of a room changed (its password, its
        retention); what members are shown of a room's policy is its log's."""

    def _on_invited(self, room, by):
        self.emit("invited", room=room, by=by)

    def _on_deleted(self, room, by):
        """A room deleted by its owner: a room of that name made later is a new
        room, whose log is trusted anew on first use (as any room's is)."""
        self.emit("room_deleted", room=room, by=by)
        self.drop_room(fold(room))
        self.logs.forget(room)
        self.keys.forget_room(room)
        self.save()

    def _on_more(self, room, after):
        """Handled by the sync that asked; nothing to do as an event."""

    def _on_limits(self, limits):
        """Read by the login that asked for it (L{_on_hello})."""

    # -- what the parts tell the session ----------------------------------------------

    def log_changed(self, room: str) -> None:
        """A new entry: what the room shows (members, role, policy) follows the log."""
        local = self.rooms.get(fold(room))
        log_ = self.logs.get(room)
        if local is None or log_ is None:
            return
        state = log_.state
        local.members = len(state.members)
        local.role = state.role(self.identity.fingerprint) or local.role
        local.history = state.history
        local.flags = {state.history, *(["invite_only"] if state.invite_only else [])}

    def epoch_arrived(self, room: str) -> None:
        """The room's log has a new epoch (or gave us the current one)."""
        local = self.rooms.get(fold(room))
        log_ = self.logs.get(room)
        if local is None or log_ is None:
            return
        state = log_.state
        if state.epoch != local.epoch:
            local.epoch, local.epoch_load = max(state.epoch, local.epoch), 0
        local.history = state.history
        local.key_requested = False
        if self.keys.key(room, state.epoch) is not None:
            self.keywaits.usable(room)
        else:
            self.reception.retry(local)
            self.sender.pump()

    def member_removed(self, room: str, state, remover: bytes | None) -> None:
        """Someone left (or their key was replaced): the key must change."""
        if fold(room) in self.rooms:
            self.rotator.removal_seen(room, state, remover)

    def drop_room(self, name: str) -> None:
        room = self.rooms.pop(fold(name), None)
        if room is None:
            return
        self._left[fold(room.name)] = room.to_dict()
        while len(self._left) > LEFT_ROOMS_KEPT:
            del self._left[next(iter(self._left))]
        self.sender.drop_room(room.name, f"you are no longer in {room.name}")
        self.save()

    def room_forked(self, room: str, text: str) -> None:
        """The server showed something no honest log can be: say so, loudly, once."""
        local = self.rooms.get(fold(room))
        told = local is not None and "forked" in local.told
        if local is not None:
            local.told.add("forked")
        self.save()
        if not told:
            self.emit("room_forked", room=room, message=text)
        self.sender.pump()

    def rotation_over(self, result):
        self.sender.pump()
        return result

    def rotation_failed(self, room: str, failure) -> None:
        self.emit("error", code=str(getattr(failure.value, "code", "CLIENT")),
                  message=f"could not make a new key for {room}: {failure.getErrorMessage()}")
        for entry in self.outbox.drop_room(room):
            self.sender.failed_to_send(entry, "ROTATION_FAILED", failure.getErrorMessage())

    def trust_changed(self) -> None:
        """The user accepted or verified a key: waiting messages may go, and
        waiting ones from that key be shown."""
        for room in self.rooms.values():
            self.reception.retry(room)
        self.sender.pump()

    def member_since(self, state) -> int:
        """The index of the entry since which this client's key is a member."""
        me = self.identity.fingerprint
        member = state.members.get(me)
        return max(member.since if member else state.length, self.rekeyed_at(state))

    def rekeyed_at(self, state) -> int:
        """The index of the entry that replaced our old key with this one (0: none)."""
        me = self.identity.fingerprint
        return max((index for index, old in state.removals
                    if state.replaced.get(old) == me), default=0)

    def ensure_log(self, room: str) -> None:
        """A room from before the logs gets one before anything is sent there."""
        local = self.rooms.get(fold(room))
        if local is not None and self.live:
            self.legacy.upgrade(local).addErrback(self.passing_failure)

    # -- commands --------------------------------------------------------------------

    def join(self, name: str, password: str | None = None) -> defer.Deferred:
        return self.membership.join(name, password)

    def part(self, name: str, reason: str | None = None) -> defer.Deferred:
        return self.membership.part(name, reason)

    def invite(self, room: str, nick: str) -> defer.Deferred:
        return self.membership.invite(room, nick)

    def kick(self, room: str, nick: str, reason: str | None = None,
             ban: bool = False) -> defer.Deferred:
        return self.membership.kick(room, nick, reason, ban)

    def unban(self, room: str, nick: str) -> defer.Deferred:
        return self.membership.unban(room, nick)

    def set_role(self, room: str, nick: str, role: str) -> defer.Deferred:
        return self.membership.set_role(room, nick, role)

    def configure(self, room: str, setting: str, value: str | None) -> defer.Deferred:
        return self.membership.configure(room, setting, value)

    def who(self, room: str) -> defer.Deferred:
        return self.membership.who(room)

    def room_code(self, room: str) -> str:
        return self.membership.room_code(room)

    def set_topic(self, room: str, topic: str) -> defer.Deferred:
        return self.request("TOPIC", self.room(room).name, topic)

    def rotate(self, room_name: str, reason: str = "requested",
               history: str | None = None) -> defer.Deferred:
        """A new epoch for the room now; with C{history}, the owner's new
        history policy first (a reason to rotate in itself)."""
        return self.rotator.rotate(room_name, reason, history)

    @defer.inlineCallbacks
    def measure_lag(self):
        """Seconds for a PING to come back from the server."""
        started = self.clock.seconds()
        yield self.request("PING")
        return self.clock.seconds() - started

    @defer.inlineCallbacks
    def list_rooms(self):
        lines = yield self.paged("LIST")
        return [{"room": a["room"], "members": a["members"], "topic": a["topic"]}
                for _, a in lines]

    def history(self, room_name: str, count: int) -> defer.Deferred:
        return self.reception.history(room_name, count)

    def verify(self, nick: str, confirm: bool = False) -> defer.Deferred:
        return self.peers.verify(nick, confirm)

    def accept(self, nick: str) -> bool:
        return self.peers.accept(nick)

    def send_text(self, room_name: str, text: str):
        return self.sender.send_text(room_name, text)
